package runtime

import (
	"slices"
	"testing"
)

func TestDraftTokens(t *testing.T) {
	tests := []struct {
		name   string
		tokens []int32
		maxN   int
		k      int
		want   []int32
	}{
		{"Empty", nil, 3, 4, nil},
		{"One", []int32{7}, 3, 4, nil},
		{"NoRepeat", []int32{1, 2, 3, 4, 5}, 3, 4, nil},
		{"Unigram", []int32{1, 2, 3, 1}, 3, 4, []int32{2, 3, 1}},
		{"KCaps", []int32{1, 2, 3, 4, 5, 1}, 3, 2, []int32{2, 3}},
		// the longest suffix that recurs wins over a more recent shorter one
		{"Trigram", []int32{5, 6, 7, 9, 9, 0, 6, 7, 1, 5, 6, 7}, 3, 3, []int32{9, 9, 0}},
		{"Bigram", []int32{6, 7, 8, 1, 7, 2, 6, 7}, 3, 2, []int32{8, 1}},
		// the most recent occurrence of the longest suffix
		{"MostRecent", []int32{1, 2, 3, 1, 2, 4, 1, 2}, 2, 1, []int32{4}},
		// a loop: the draft runs up to the end of the context
		{"Loop", []int32{4, 5, 4, 5, 4}, 3, 8, []int32{5, 4}},
		{"MaxN1", []int32{5, 6, 7, 9, 5, 6, 7}, 1, 2, []int32{9, 5}},
		{"KZero", []int32{1, 2, 1}, 3, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []int32{42}
			got := draftTokens(slices.Clone(prefix), tt.tokens, tt.maxN, tt.k)
			if !slices.Equal(got[:1], prefix) || !slices.Equal(got[1:], tt.want) && len(got[1:])+len(tt.want) > 0 {
				t.Errorf("draftTokens(%v, %d, %d) = %v, want %v after the prefix", tt.tokens, tt.maxN, tt.k, got, tt.want)
			}
		})
	}
}

func TestSpecStateBackoff(t *testing.T) {
	var sp specState
	var tick uint64 = 100
	var waits []uint64
	for range 8 {
		sp.record(0, tick)
		waits = append(waits, sp.until-tick)
	}
	if want := []uint64{1, 2, 4, 8, 16, 32, 32, 32}; !slices.Equal(waits, want) {
		t.Errorf("backoff %v, want %v", waits, want)
	}
	sp.record(2, tick)
	if sp.fails != 0 || sp.until != 0 {
		t.Errorf("an accepted draft kept the backoff: %+v", sp)
	}
}

func TestSpecTokensFor(t *testing.T) {
	const cache = 32 << 20
	tests := []struct {
		n      int
		device string
		weight int64
		want   int
	}{
		{SpeculativeAuto, "cpu", 1 << 30, 4}, // weights streamed from memory
		{SpeculativeAuto, "cpu", 8 << 20, 0}, // in the cache: arithmetic-bound
		{SpeculativeAuto, "cuda", 1 << 30, 0},
		{0, "cpu", 1 << 30, 0},
		{6, "cpu", 8 << 20, 6},
		{2, "cuda", 1 << 30, 2},
	}
	for _, tt := range tests {
		if got := specTokensFor(tt.n, tt.device, tt.weight, cache); got != tt.want {
			t.Errorf("specTokensFor(%d, %s, %d) = %d, want %d", tt.n, tt.device, tt.weight, got, tt.want)
		}
	}
}
