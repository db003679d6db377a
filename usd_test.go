package nozzle_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func TestRoundUSD(t *testing.T) {
	var noisy float64
	for range 15 {
		noisy += 1e-7 // 1.4999999999999996e-06
	}
	for _, tc := range []struct{ in, want float64 }{
		{noisy, 1.5e-6},
		{0.1 + 0.2, 0.3},
		{0.0000015000000000000002, 0.0000015},
		{-0.3599985000000001, -0.3599985},
		{1234.56789012345678, 1234.5678901235},
		{4e-11, 0},
		{-4e-11, 0},
		{6e-11, 1e-10},
		{0, 0},
		{123456.1, 123456.1},
		// Beyond 2^53 steps a float64 has no 1e-10 digit: as it is.
		{1e6 + 1.0/3, 1e6 + 1.0/3},
		{1e300, 1e300},
	} {
		got := nozzle.RoundUSD(tc.in)
		if got != tc.want || math.Signbit(got) != math.Signbit(tc.want) {
			t.Errorf("RoundUSD(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, x := range []float64{math.Inf(1), math.Inf(-1)} {
		if got := nozzle.RoundUSD(x); got != x {
			t.Errorf("RoundUSD(%v) = %v", x, got)
		}
	}
	if got := nozzle.RoundUSD(math.NaN()); !math.IsNaN(got) {
		t.Errorf("RoundUSD(NaN) = %v", got)
	}
	b, err := json.Marshal(map[string]float64{"cost_usd": nozzle.RoundUSD(noisy)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"cost_usd":0.0000015}`; got != want {
		t.Errorf("JSON %s, want %s", got, want)
	}
}

// A rounded figure rounds to itself.
func TestRoundUSD_Idempotent(t *testing.T) {
	for _, x := range []float64{1e-10, 0.123456789, 98765.4321012345, 0.30000000000000004, 899999.9999999999} {
		r := nozzle.RoundUSD(x)
		if nozzle.RoundUSD(r) != r {
			t.Errorf("RoundUSD(RoundUSD(%v)) = %v, not %v", x, nozzle.RoundUSD(r), r)
		}
	}
}

// Seconds round to the nanosecond and ratios to a millionth, as USD to
// 1e-10: the noise of float sums goes, the decimals stay.
func TestRoundSecondsAndRatio(t *testing.T) {
	var noisy float64
	for range 10 {
		noisy += 0.001 // 0.010000000000000002
	}
	for _, tc := range []struct {
		name     string
		round    func(float64) float64
		in, want float64
	}{
		{"seconds", nozzle.RoundSeconds, noisy, 0.01},
		{"seconds", nozzle.RoundSeconds, 0.9999999999999999, 1},
		{"seconds", nozzle.RoundSeconds, 0.04711904761904762, 0.047119048},
		{"seconds", nozzle.RoundSeconds, 4e-10, 0},
		{"seconds", nozzle.RoundSeconds, -4e-10, 0},
		{"seconds", nozzle.RoundSeconds, 2678400.0000000002, 2678400},
		{"seconds", nozzle.RoundSeconds, 1e7 + 1.0/3, 1e7 + 1.0/3}, // no 1e-9 digit: as it is
		{"ratio", nozzle.RoundRatio, 0.010000000000000004, 0.01},
		{"ratio", nozzle.RoundRatio, 99.98611111111111, 99.986111},
		{"ratio", nozzle.RoundRatio, 1.0 / 3, 0.333333},
	} {
		got := tc.round(tc.in)
		if got != tc.want || math.Signbit(got) {
			t.Errorf("%s: round(%v) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
		if tc.round(got) != got {
			t.Errorf("%s: round(round(%v)) = %v, not %v", tc.name, tc.in, tc.round(got), got)
		}
	}
	b, err := json.Marshal(map[string]float64{"device_seconds": nozzle.RoundSeconds(noisy), "utilization": nozzle.RoundRatio(noisy)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"device_seconds":0.01,"utilization":0.01}`; got != want {
		t.Errorf("JSON %s, want %s", got, want)
	}
}

// TestFormatUSD: the one way amounts are written for people (the console,
// `nozzle report`'s table, a budget's refusal): cents from a dollar up,
// three significant digits below, never an exponent, never 0.00 for a
// non-zero amount.
func TestFormatUSD(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "$0.00"},
		{5e-7, "$0.0000005"},
		{1.234e-5, "$0.0000123"},
		{0.000068, "$0.000068"},
		{0.0000696, "$0.0000696"},
		{0.00105, "$0.00105"},
		{0.0012, "$0.0012"},
		{0.004684, "$0.00468"},
		{0.0099, "$0.0099"},
		{0.00999999, "$0.01"},
		{0.0149, "$0.0149"},
		{0.028, "$0.028"},
		{0.1 + 0.2, "$0.30"},
		{0.19, "$0.19"},
		{0.5, "$0.50"},
		{0.123, "$0.123"},
		{0.9996, "$1.00"},
		{1, "$1.00"},
		{12.345, "$12.35"},
		{999.999, "$1,000.00"},
		{1234.5, "$1,234.50"},
		{1264, "$1,264.00"},
		{1234567.891, "$1,234,567.89"},
		{-0.25, "-$0.25"},
		{-3.9989, "-$4.00"},
		{-0.0000042, "-$0.0000042"},
		{1e-12, "<$0.000000001"},
		{-1e-12, "-<$0.000000001"},
	} {
		if got := nozzle.FormatUSD(tc.in); got != tc.want {
			t.Errorf("FormatUSD(%g) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGroupDigits(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "999": "999", "1000": "1,000", "123456.78": "123,456.78", "1234567": "1,234,567", "12.": "12."} {
		if got := nozzle.GroupDigits(in); got != want {
			t.Errorf("GroupDigits(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatSeconds(t *testing.T) {
	for in, want := range map[float64]string{0: "0.00 s", 0.222886388: "0.22 s", 0.004: "0.004 s", 0.009: "0.01 s", 0.00499: "0.005 s", 0.0000312: "0.00003 s", 1e-12: "<0.000000001 s", 0.005: "0.01 s", 59.994: "59.99 s", 60: "1.0 min", 720: "12.0 min", 7200: "2.0 h"} {
		if got := nozzle.FormatSeconds(in); got != want {
			t.Errorf("FormatSeconds(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatLatency(t *testing.T) {
	for in, want := range map[time.Duration]string{0: "0 µs", -time.Second: "0 µs", 850 * time.Microsecond: "850 µs", 1400: "1 µs",
		999_600: "1.00 ms", 999_996_000: "1.00 s", 12_345_678: "12.35 ms", time.Millisecond: "1.00 ms", 1250 * time.Millisecond: "1.25 s", 2 * time.Minute: "2.0 min"} {
		if got := nozzle.FormatLatency(in); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatPercent(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{{12.34, "12.3%"}, {99.94, "99.9%"}, {99.96, "99.96%"}, {99.9996, "99.9996%"}, {99.99996, "99.9999%"}, {100, "100.0%"}, {0, "0.0%"}, {0.05, "0.1%"}, {1.0 / 36, "0.03%"}, {0.0049, "0.005%"}, {0.0001, "0.0001%"}, {0.00002, "<0.0001%"}, {-0.02, "-0.02%"}, {-5, "-5.0%"}, {-3.9, "-3.9%"}} {
		if got := nozzle.FormatPercent(tt.in); got != tt.want {
			t.Errorf("FormatPercent(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
