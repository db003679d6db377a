package nozzle

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// USDPrecision is the step every USD figure of a report is rounded to:
// 1e-10 USD, a ten-thousandth of a micro-dollar. A single token at the
// cheapest real prices (a few cents per million tokens) costs 1e-8 USD or
// so, and a second of a GPU at a dollar an hour about 3e-4 USD, so the
// step keeps every figure a bill can show (cents, or micro-dollars for
// one request) exact, while dropping the float64 noise that sums of many
// small products leave in the last digits (0.0000014999999999999996 for
// 1.5e-6).
const USDPrecision = 1e-10

// RoundUSD rounds a USD amount to USDPrecision, so that it reads as the
// decimal it stands for (0.0000015, not 0.0000014999999999999996) in
// JSON and CSV. Figures are summed exactly and rounded once, where a
// report is finished; a sum of rounded figures is rounded again only to
// drop the noise of the float additions, which leaves its value on the
// same 1e-10 grid. Amounts of 900,000 USD and more, whose float64 has no
// digit at 1e-10 to round, and NaN and infinities are returned as they
// are; zero is never negative.
func RoundUSD(x float64) float64 { return roundTo(x, 1/USDPrecision) }

// SecondsPrecision is the step every seconds figure of a report, and a
// request's device seconds, is rounded to: 1e-9 s, a nanosecond. The
// runtimes measure time in whole nanoseconds (time.Duration), both the
// engine steps a request's device seconds are its share of and their
// capacity intervals; digits below a nanosecond come only from splitting
// those (a step among its requests, an interval across hours, idle time
// among tenants) and from the float additions' noise
// (0.010000000000000002 for ten requests of 0.001 s).
const SecondsPrecision = 1e-9

// RoundSeconds rounds a duration in seconds to SecondsPrecision, so that
// it reads as the decimal it stands for (0.01, not 0.010000000000000002),
// as RoundUSD does a USD amount: once, where a figure is finished.
// Durations of 9,007,199 s (104 days) and more, whose float64 has no digit
// at 1e-9 to round, and NaN and infinities are returned as they are.
func RoundSeconds(x float64) float64 { return roundTo(x, 1/SecondsPrecision) }

// RatioPrecision is the step a report's ratios and percentages (a GPU's
// utilization, a row's saving percent) are rounded to: 1e-6, a
// ten-thousandth of a percent of utilization and a millionth of a point of
// a saving percent, far finer than any decision they inform.
const RatioPrecision = 1e-6

// RoundRatio rounds a ratio or a percentage to RatioPrecision, so that it
// reads as a decimal (0.01, not 0.010000000000000004).
func RoundRatio(x float64) float64 { return roundTo(x, 1/RatioPrecision) }

// roundTo rounds x to the nearest multiple of 1/scale, as the float64
// nearest that decimal. Values with 2^53 steps or more, whose float64 has
// no digit at the step to round, and NaN and infinities are returned as
// they are; zero is never negative.
func roundTo(x, scale float64) float64 {
	if !(math.Abs(x) < (1<<53)/scale) {
		return x
	}
	r := math.Round(x*scale) / scale
	if r == 0 {
		return 0 // not -0
	}
	return r
}

// FormatUSD shows a USD amount as a person reads it: the one way the
// console, `nozzle report`'s table and the API's messages (a budget's
// refusal) write money. From a dollar up, whole cents with the thousands
// grouped ($12.35, $1,234.50); below a dollar, three significant digits
// and at least the cents ($0.19, $0.0149, $0.00468, $0.0000005), so a few
// tokens' charge never reads as $0.00 nor a small loss as -$0.00, and
// never with an exponent; below a billionth of a dollar (under
// USDPrecision's rounding, only float noise) "<$0.000000001"; zero is
// $0.00. A negative amount has a leading '-' (-$0.25); the console sets it
// as a typographic minus.
func FormatUSD(v float64) string {
	sign := ""
	if v < 0 {
		sign = "-"
	}
	v = math.Abs(v)
	var s string
	switch {
	case v == 0:
		return "$0.00"
	case v < 1e-9:
		return sign + "<$0.000000001"
	case v < 1:
		dec := max(2, 2-int(math.Floor(math.Log10(v))))
		s = strconv.FormatFloat(v, 'f', dec, 64)
		// trailing zeros go, down to the cents (0.0280 → 0.028, 0.500 → 0.50)
		if t := strings.TrimRight(s, "0"); len(t) >= len("0.00") {
			s = t
		} else {
			s = s[:len("0.00")]
		}
	default:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return sign + "$" + GroupDigits(s)
}

// GroupDigits puts a comma between each three digits of a decimal
// number's whole part, as a bill shows it: 1234567.5 as 1,234,567.5. s is
// digits with an optional fraction after a '.', without a sign.
func GroupDigits(s string) string {
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, r := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if hasFrac {
		b.WriteString("." + frac)
	}
	return b.String()
}

// FormatSeconds shows a duration in seconds as a person reads it, the
// one way the console and `nozzle report`'s table write a GPU's or a
// request's time: hours or minutes with one decimal from a minute up
// (2.0 h, 12.5 min), seconds with two decimals below (0.22 s), and below
// the hundredth as many as its first digit takes (0.004 s, 0.00003 s), so
// that a fraction of a second of work never reads as 0 beside a
// utilisation above zero; below a billionth of a second (only float
// noise) "<0.000000001 s"; zero is 0.00 s.
func FormatSeconds(s float64) string {
	switch {
	case s >= 3600:
		return strconv.FormatFloat(s/3600, 'f', 1, 64) + " h"
	case s >= 60:
		return strconv.FormatFloat(s/60, 'f', 1, 64) + " min"
	case s > 0 && s < 1e-9:
		return "<0.000000001 s"
	case s > 0 && s < 0.005: // "0.00 s" at two decimals
		dec := min(9, -int(math.Floor(math.Log10(s))))
		return strings.TrimRight(strconv.FormatFloat(s, 'f', dec, 64), "0") + " s"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

// FormatLatency shows a measured wait (a request's latency, a commit's
// fsync, a benchmark's median) as a person reads it: whole microseconds
// below a millisecond (850 µs), milliseconds with two decimals below a
// second (12.35 ms), and from a second up as FormatSeconds writes a
// duration (1.25 s, 2.0 min); zero and less is 0 µs.
func FormatLatency(d time.Duration) string {
	if d <= 0 {
		return "0 µs"
	}
	// the unit as the figure reads rounded (999.6 µs is 1.00 ms)
	if us := math.Round(float64(d) / 1e3); us < 1000 {
		return strconv.FormatFloat(us, 'f', 0, 64) + " µs"
	}
	if ms := math.Round(float64(d)/1e4) / 100; ms < 1000 {
		return strconv.FormatFloat(ms, 'f', 2, 64) + " ms"
	}
	return FormatSeconds(d.Seconds())
}

// FormatPercent shows a percentage (a saving, a share of a budget) as a
// person reads it, the one way the console and `nozzle report`'s table
// write one: one decimal, or as many as it takes (up to four) not to
// round a figure short of 100 up to "100.0%": a saving of 99.996% reads
// 99.996%, not a whole GPU for free, and 99.99996% reads 99.9999%; nor a
// figure above zero down to "0.0%": a GPU busy for a second of an hour
// reads 0.03%, and a figure below 0.0001% "<0.0001%" (a negative one
// "-<0.0001%", as FormatUSD's); zero is 0.0%.
func FormatPercent(v float64) string {
	if a := math.Abs(v); a > 0 && a < 0.05 { // "0.0%" at one decimal
		sign := ""
		if v < 0 {
			sign = "-"
		}
		if a < 0.0001 {
			return sign + "<0.0001%"
		}
		dec := -int(math.Floor(math.Log10(a))) // its first digit
		return sign + strings.TrimRight(strconv.FormatFloat(a, 'f', dec, 64), "0") + "%"
	}
	prec := 1
	for prec < 4 && v < 100 && math.Round(v*math.Pow10(prec)) >= 100*math.Pow10(prec) {
		prec++
	}
	if v < 100 && math.Round(v*math.Pow10(prec)) >= 100*math.Pow10(prec) {
		v = math.Floor(v*math.Pow10(prec)) / math.Pow10(prec) // never "100%" short of it
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + "%"
}
