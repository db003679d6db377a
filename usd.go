package nozzle

import "math"

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
func RoundUSD(x float64) float64 {
	const scale = 1 / USDPrecision
	if !(math.Abs(x) < (1<<53)/scale) {
		return x
	}
	r := math.Round(x*scale) / scale
	if r == 0 {
		return 0 // not -0
	}
	return r
}
