package runtime_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestPrefixCache_Reuse: a prompt that begins with whole KV blocks an
// earlier request computed, under the same adapter, reuses them: the
// result says how many prompt tokens came from the cache, the output is
// the same as without the cache, and the device time is lower. Another
// adapter, another beginning or another tenant reuses nothing: a cache
// shared between tenants would tell one what another's prompts begin with.
func TestPrefixCache_Reuse(t *testing.T) {
	on := startFake(t, runtime.Options{}, 256)
	defer closeRT(t, on)
	off := startFake(t, runtime.Options{DisablePrefixCache: true}, 256)
	defer closeRT(t, off)
	rng := newRNG(11)
	system := randomPrompt(rng, 100) // 6 whole blocks of 16, then 4 tokens
	other := append(slices.Clone(system[:50]), randomPrompt(rng, 30)...)
	ctx := context.Background()
	reqAs := func(tenant string, prompt []int, ad *nozzle.Adapter) *nozzle.GenerateRequest {
		return &nozzle.GenerateRequest{TenantID: tenant, PromptTokens: prompt, MaxTokens: 12, Adapter: ad}
	}
	req := func(prompt []int, ad *nozzle.Adapter) *nozzle.GenerateRequest { return reqAs("t", prompt, ad) }
	for _, tc := range []struct {
		name   string
		req    *nozzle.GenerateRequest
		cached int
	}{
		{"First", req(system, nil), 0},
		{"Again", req(system, nil), 96},                 // 6 whole blocks; the last 4 tokens are computed
		{"SharedBeginning", req(other, nil), 48},        // 3 whole blocks in common
		{"OtherAdapter", req(system, adapterFor(1)), 0}, // keys and values differ under an adapter
		{"SameAdapterAgain", req(system, adapterFor(1)), 96},
		{"OtherTenant", reqAs("u", system, nil), 0},
		{"OtherTenantAdapter", reqAs("u", system, adapterFor(1)), 0},
		{"OtherTenantAgain", reqAs("u", system, nil), 96},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := run(ctx, on, tc.req), run(ctx, off, tc.req)
			if a.err != nil || b.err != nil {
				t.Fatal(a.err, b.err)
			}
			if a.text != b.text || a.res.CompletionTokens != b.res.CompletionTokens {
				t.Errorf("with the cache %q (%d tokens), without %q (%d)", a.text, a.res.CompletionTokens, b.text, b.res.CompletionTokens)
			}
			if a.res.CachedPromptTokens != tc.cached || b.res.CachedPromptTokens != 0 {
				t.Errorf("cached prompt tokens %d (without the cache %d), want %d", a.res.CachedPromptTokens, b.res.CachedPromptTokens, tc.cached)
			}
			if tc.cached > 0 && a.res.DeviceSeconds >= b.res.DeviceSeconds {
				t.Errorf("device seconds %.4f with %d cached tokens, %.4f without", a.res.DeviceSeconds, tc.cached, b.res.DeviceSeconds)
			}
		})
	}
}

// TestPrefixCache_Random runs many requests, concurrently, whose prompts
// share beginnings at random, on a KV pool small enough that cached blocks
// are evicted and sequences preempted, with and without the cache: every
// output is the same (the fake engine's outputs depend on every earlier
// token and the adapter, so a wrongly shared block shows), and the cache
// served some prompt tokens.
func TestPrefixCache_Random(t *testing.T) {
	on := startFake(t, runtime.Options{MaxBatchSeqs: 6}, 40)
	defer closeRT(t, on)
	off := startFake(t, runtime.Options{MaxBatchSeqs: 6, DisablePrefixCache: true}, 40)
	defer closeRT(t, off)
	rng := newRNG(12)
	stems := [][]int{randomPrompt(rng, 70), randomPrompt(rng, 40), randomPrompt(rng, 33)}
	var reqs []*nozzle.GenerateRequest
	for i := range 60 {
		stem := stems[rng.IntN(len(stems))]
		p := append(slices.Clone(stem[:rng.IntN(len(stem)+1)]), randomPrompt(rng, 1+rng.IntN(40))...)
		r := &nozzle.GenerateRequest{TenantID: fmt.Sprint("t", i%3), PromptTokens: p, MaxTokens: 4 + rng.IntN(30), Temperature: 0.8}
		seed := uint64(i)
		r.Seed = &seed
		if rng.IntN(3) == 0 {
			r.Adapter = adapterFor(rng.IntN(2))
		}
		reqs = append(reqs, r)
	}
	runAll := func(rt *testRT) []outcome {
		out := make([]outcome, len(reqs))
		var wg sync.WaitGroup
		for i, r := range reqs {
			wg.Go(func() { out[i] = run(context.Background(), rt, r) })
		}
		wg.Wait()
		return out
	}
	a, b := runAll(on), runAll(off)
	cached := 0
	for i := range reqs {
		if a[i].err != nil || b[i].err != nil {
			t.Fatalf("request %d: %v / %v", i, a[i].err, b[i].err)
		}
		if a[i].text != b[i].text {
			t.Errorf("request %d: with the cache %q, without %q", i, a[i].text, b[i].text)
		}
		cached += a[i].res.CachedPromptTokens
	}
	if cached == 0 {
		t.Error("the cache served no prompt tokens")
	}
	t.Logf("%d prompt tokens from the cache", cached)
}

// TestPrefixCache_Followers: requests submitted together with the same
// long prompt (the n choices of one request) wait for the first to compute
// it and then take it from the cache, instead of all computing it at once.
func TestPrefixCache_Followers(t *testing.T) {
	on := startFake(t, runtime.Options{}, 256)
	defer closeRT(t, on)
	off := startFake(t, runtime.Options{DisablePrefixCache: true}, 256)
	defer closeRT(t, off)
	prompt := randomPrompt(newRNG(13), 200) // 12 whole blocks, then 8 tokens
	runN := func(rt *testRT) []outcome {
		out := make([]outcome, 4)
		var wg sync.WaitGroup
		for i := range out {
			seed := uint64(i)
			r := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: prompt, MaxTokens: 8, Temperature: 1, Seed: &seed}
			wg.Go(func() { out[i] = run(context.Background(), rt, r) })
		}
		wg.Wait()
		return out
	}
	a, b := runN(on), runN(off)
	cached := 0
	var dOn, dOff float64
	for i := range a {
		if a[i].err != nil || b[i].err != nil || a[i].text != b[i].text {
			t.Errorf("choice %d: with the cache %q (%v), without %q (%v)", i, a[i].text, a[i].err, b[i].text, b[i].err)
		}
		cached += a[i].res.CachedPromptTokens
		dOn += a[i].res.DeviceSeconds
		dOff += b[i].res.DeviceSeconds
	}
	if cached != 3*192 {
		t.Errorf("%d prompt tokens from the cache, want 3 × 192", cached)
	}
	if dOn >= dOff/2 {
		t.Errorf("device seconds %.3f with the cache, %.3f without", dOn, dOff)
	}
}
