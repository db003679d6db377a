package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoad_Precedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nozzle.toml")
	os.WriteFile(file, []byte(`
addr = "0.0.0.0:9000"
slots = 4
max_rank = 32
upstreams = ["http://a:1", "http://b:2"]
request_timeout = "30s"
rate_per_hour = 3
`), 0o600)

	c, rest, err := Load("serve", []string{"--config", file, "--slots", "16", "extra"},
		env(map[string]string{"NOZZLE_SLOTS": "12", "NOZZLE_MAX_RANK": "16", "NOZZLE_ADMIN_TOKEN": "s3cret"}), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Addr, "0.0.0.0:9000"; got != want { // file over default
		t.Errorf("Addr=%q, want %q", got, want)
	}
	if got, want := c.MaxRank, 16; got != want { // env over file
		t.Errorf("MaxRank=%d, want %d", got, want)
	}
	if got, want := c.Slots, 16; got != want { // flag over env and file
		t.Errorf("Slots=%d, want %d", got, want)
	}
	if got, want := strings.Join(c.Upstreams, ","), "http://a:1,http://b:2"; got != want {
		t.Errorf("Upstreams=%q, want %q", got, want)
	}
	if c.RequestTimeout != 30*time.Second || c.RatePerHour != 3 {
		t.Errorf("RequestTimeout=%v RatePerHour=%v", c.RequestTimeout, c.RatePerHour)
	}
	// unset: the ledger compares with the rate of the runtimes that served
	// each adapter (a gateway's own rate_per_hour is no runtime's)
	if c.DedicatedRatePerHour != 0 {
		t.Errorf("DedicatedRatePerHour=%v, want 0", c.DedicatedRatePerHour)
	}
	if string(c.AdminToken) != "s3cret" || c.AdminToken.String() != "[redacted]" {
		t.Errorf("AdminToken=%q shown as %q", string(c.AdminToken), c.AdminToken.String())
	}
	if len(rest) != 1 || rest[0] != "extra" {
		t.Errorf("rest=%v", rest)
	}
}

// Bool keys take the bare flag form; the help shows each key's default.
func TestLoad_FlagForms(t *testing.T) {
	for args, want := range map[string]bool{"--prefix-cache": true, "--prefix-cache=false": false, "--prefix-cache=true": true} {
		c, rest, err := Load("serve", []string{args, "--data", "d"}, env(nil), os.Stderr)
		if err != nil || c.PrefixCache != want || c.Data != "d" || len(rest) != 0 {
			t.Errorf("%s: PrefixCache=%v Data=%q rest=%v err=%v", args, c.PrefixCache, c.Data, rest, err)
		}
	}
	var help strings.Builder
	if _, _, err := Load("serve", []string{"-h"}, env(nil), &help); err == nil {
		t.Fatal("-h: no error")
	}
	for _, want := range []string{"-addr value", "(default 127.0.0.1:8080)", "(default ./data)", "-prefix-cache\n", "(default 10m0s)",
		"(default operator@nozzle.local)"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
	if strings.Contains(help.String(), "(default 0)") || strings.Contains(help.String(), "(default false)") {
		t.Errorf("help shows zero defaults:\n%s", help.String())
	}
}

func TestLoad_Errors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("addr = \n"), 0o600)
	unknown := filepath.Join(dir, "unknown.toml")
	os.WriteFile(unknown, []byte("slotz = 3\n"), 0o600)
	wrongType := filepath.Join(dir, "type.toml")
	os.WriteFile(wrongType, []byte("slots = \"many\"\n"), 0o600)

	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"UnknownFlag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
		{"BadInt", []string{"--slots", "x"}, nil, `slots: "x" is not a whole number`},
		{"BadDevice", []string{"--device", "tpu"}, nil, `device "tpu": want auto, cpu or cuda`},
		{"BadWeights", []string{"--weights", "fp4"}, nil, `weights "fp4": want checkpoint or int8`},
		{"Int8OnCUDA", []string{"--weights", "int8", "--device", "cuda"}, nil, "weights int8 with device cuda"},
		{"BadEnv", nil, map[string]string{"NOZZLE_MAX_RANK": "big"}, "environment NOZZLE_MAX_RANK"},
		{"RankTooLarge", []string{"--max-rank", "512"}, nil, "max_rank 512: want 1 to 256"},
		{"NegativeRate", []string{"--rate-per-hour", "-1"}, nil, "rate_per_hour -1: must be a finite number, not negative"},
		{"NaNRate", []string{"--rate-per-hour", "NaN"}, nil, "rate_per_hour NaN: must be a finite number"},
		{"InfPrice", nil, map[string]string{"NOZZLE_PRICE_PROMPT": "inf"}, "price_prompt +Inf: must be a finite number"},
		{"BatchDiscountOver100", []string{"--price-batch-discount-percent", "120"}, nil, "price_batch_discount_percent 120: want a number from 0 to 100"},
		{"BatchDiscountNaN", nil, map[string]string{"NOZZLE_PRICE_BATCH_DISCOUNT_PERCENT": "nan"}, "price_batch_discount_percent NaN"},
		{"CachedAbovePrompt", []string{"--price-cached-prompt", "0.2"}, nil, "price_cached_prompt 0.2: want a number from 0 to price_prompt (0.1)"},
		{"CachedNegative", nil, map[string]string{"NOZZLE_PRICE_CACHED_PROMPT": "-0.01"}, "price_cached_prompt -0.01"},
		{"CachedNaN", nil, map[string]string{"NOZZLE_PRICE_CACHED_PROMPT": "nan"}, "price_cached_prompt NaN"},
		{"PromptBelowCached", []string{"--price-prompt", "0.02", "--price-cached-prompt", "0.05"}, nil, "price_cached_prompt 0.05: want a number from 0 to price_prompt (0.02)"},
		{"NaNWeight", []string{"--decode-weight", "nan"}, nil, "decode_weight must be positive finite numbers"},
		{"FileSyntax", []string{"--config", bad}, nil, "config file " + bad},
		{"FileUnknownKey", []string{"--config", unknown}, nil, `unknown key "slotz"`},
		{"FileWrongType", []string{"--config", wrongType}, nil, `slots: "many" is not a whole number`},
		{"FileMissing", []string{"--config", filepath.Join(dir, "none.toml")}, nil, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load("serve", tt.args, env(tt.env), os.Stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err=%v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestLoad_RuntimeIDOnFly: on Fly.io a runtime left without an id takes
// its machine's, so the machines of one process group are told apart; one
// that is set stays.
func TestLoad_RuntimeIDOnFly(t *testing.T) {
	c, _, err := Load("runtime", nil, env(map[string]string{"FLY_MACHINE_ID": "e784079b449483"}), os.Stderr)
	if err != nil || c.RuntimeID != "fly-e784079b449483" {
		t.Errorf("RuntimeID %q (%v)", c.RuntimeID, err)
	}
	c, _, err = Load("runtime", []string{"--runtime-id", "gpu-a"}, env(map[string]string{"FLY_MACHINE_ID": "e784079b449483"}), os.Stderr)
	if err != nil || c.RuntimeID != "gpu-a" {
		t.Errorf("set RuntimeID %q (%v)", c.RuntimeID, err)
	}
	if c, _, _ := Load("runtime", nil, env(nil), os.Stderr); c.RuntimeID != "local" {
		t.Errorf("off Fly: RuntimeID %q", c.RuntimeID)
	}
}

// stream_checkpoint: 1 s by default, 0 turns the checkpoints off (the
// gateway's negative), a negative value is refused.
func TestLoad_StreamCheckpoint(t *testing.T) {
	for args, want := range map[string]time.Duration{"": time.Second, "250ms": 250 * time.Millisecond, "0": -1} {
		var flags []string
		if args != "" {
			flags = []string{"--stream-checkpoint", args}
		}
		c, _, err := Load("serve", flags, env(nil), os.Stderr)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		m := NewMain(c, quietLogger(), io.Discard)
		if got := m.gatewayConfig("", "").StreamCheckpointEvery; got != want {
			t.Errorf("stream_checkpoint %q: the gateway checkpoints every %v, want %v", args, got, want)
		}
	}
	if _, _, err := Load("serve", []string{"--stream-checkpoint", "-1s"}, env(nil), os.Stderr); err == nil ||
		!strings.Contains(err.Error(), "stream_checkpoint -1s: must not be negative") {
		t.Errorf("negative interval: %v", err)
	}
}

// TestLoad_BatchPricing: the batch discount and the batch meters' event
// names default as OpenAI's Batch API bills (50% off) and as the other
// meters are named, and come from the file, the environment and flags.
func TestLoad_BatchPricing(t *testing.T) {
	c, _, err := Load("serve", nil, env(nil), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.PriceBatchDiscount != 50 || c.StripeMeterBatchP != "nozzle_batch_prompt_tokens" || c.StripeMeterBatchC != "nozzle_batch_completion_tokens" {
		t.Errorf("defaults: %v %q %q", c.PriceBatchDiscount, c.StripeMeterBatchP, c.StripeMeterBatchC)
	}
	file := filepath.Join(t.TempDir(), "nozzle.toml")
	os.WriteFile(file, []byte("price_batch_discount_percent = 25\nstripe_meter_batch_prompt = \"bp\"\n"), 0o600)
	c, _, err = Load("serve", []string{"--config", file, "--stripe-meter-batch-completion", "bc"}, env(nil), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.PriceBatchDiscount != 25 || c.StripeMeterBatchP != "bp" || c.StripeMeterBatchC != "bc" {
		t.Errorf("file and flag: %v %q %q", c.PriceBatchDiscount, c.StripeMeterBatchP, c.StripeMeterBatchC)
	}
	c, _, err = Load("serve", []string{"--config", file}, env(map[string]string{"NOZZLE_PRICE_BATCH_DISCOUNT_PERCENT": "0"}), os.Stderr)
	if err != nil || c.PriceBatchDiscount != 0 {
		t.Errorf("env: %v, %v", c.PriceBatchDiscount, err)
	}
}

// TestLoad_CachedPromptPricing: the cached prompt price defaults to half
// the prompt price, and follows price_prompt at half of it wherever that
// is set (file, environment, flag) while price_cached_prompt is not; set
// itself (even to the default's value, or to 0: free), it stays as set.
// The cached prompt meters' event names default as the others are named.
func TestLoad_CachedPromptPricing(t *testing.T) {
	c, _, err := Load("serve", nil, env(nil), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.PricePrompt != 0.1 || c.PriceCachedPrompt != 0.05 || c.StripeMeterCachedP != "nozzle_cached_prompt_tokens" ||
		c.StripeMeterBatchK != "nozzle_batch_cached_prompt_tokens" {
		t.Errorf("defaults: %v %v %q %q", c.PricePrompt, c.PriceCachedPrompt, c.StripeMeterCachedP, c.StripeMeterBatchK)
	}
	file := filepath.Join(t.TempDir(), "nozzle.toml")
	os.WriteFile(file, []byte("price_prompt = 0.4\nstripe_meter_cached_prompt = \"cp\"\n"), 0o600)
	both := filepath.Join(t.TempDir(), "both.toml")
	os.WriteFile(both, []byte("price_prompt = 0.4\nprice_cached_prompt = 0.05\n"), 0o600)
	for _, c := range []struct {
		name   string
		args   []string
		env    map[string]string
		cached float64
	}{
		{"prompt from the file", []string{"--config", file}, nil, 0.2},
		{"prompt from the environment", nil, map[string]string{"NOZZLE_PRICE_PROMPT": "0.3"}, 0.15},
		{"prompt from a flag", []string{"--price-prompt", "1"}, nil, 0.5},
		{"both from the file", []string{"--config", both}, nil, 0.05},
		{"cached from the environment", []string{"--config", file}, map[string]string{"NOZZLE_PRICE_CACHED_PROMPT": "0.4"}, 0.4},
		{"cached from a flag, free", []string{"--config", file, "--price-cached-prompt", "0"}, nil, 0},
		{"cached set to the default's value", []string{"--price-prompt", "1", "--price-cached-prompt", "0.05"}, nil, 0.05},
	} {
		got, _, err := Load("serve", c.args, env(c.env), os.Stderr)
		if err != nil || got.PriceCachedPrompt != c.cached {
			t.Errorf("%s: cached price %v, %v; want %v", c.name, got.PriceCachedPrompt, err, c.cached)
		}
	}
	c, _, err = Load("serve", []string{"--config", file, "--stripe-meter-batch-cached-prompt", "bk"}, env(nil), os.Stderr)
	if err != nil || c.StripeMeterCachedP != "cp" || c.StripeMeterBatchK != "bk" {
		t.Errorf("meters from file and flag: %q %q, %v", c.StripeMeterCachedP, c.StripeMeterBatchK, err)
	}
}
