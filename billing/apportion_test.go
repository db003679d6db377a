package billing

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// Rows rounded by apportion add up exactly to their total rounded once,
// each within one step of its exact value, over many random splits of
// random totals: a few rows or many, amounts of a few steps to thousands
// of dollars, zeros among them, on the USD and on the seconds grid.
func TestApportion(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		n := 1 + r.IntN(12)
		if r.IntN(10) == 0 {
			n = 1 + r.IntN(500)
		}
		total := math.Pow(10, -9+r.Float64()*13) // 1e-9 to 1e4
		xs := splitRandom(r, total, n)
		check := func(name string, scale float64, ys []float64, sum float64, round func(float64) float64) {
			t.Helper()
			exact := 0.0
			var got int64
			for i, y := range ys {
				exact += xs[i]
				if y != round(y) {
					t.Fatalf("%s: %v is off the grid", name, y)
				}
				if d := math.Abs(y*scale - xs[i]*scale); d > 1+1e-6 {
					t.Fatalf("%s: row %v reads %v, %g steps from its exact value", name, xs[i], y, d)
				}
				if xs[i] == 0 && y != 0 {
					t.Fatalf("%s: a zero row reads %v", name, y)
				}
				got += int64(math.Round(y * scale))
			}
			if want := round(exact); sum != want || got != int64(math.Round(want*scale)) {
				t.Fatalf("%s: %d rows sum to %d steps (returned %v), want the total %v rounded once", name, n, got, sum, want)
			}
		}
		ys, sum := apportion[usdGrid](xs, sumOf(xs))
		check("usd", 1/nozzle.USDPrecision, ys, sum, nozzle.RoundUSD)
		ys, sum = apportion[secondsGrid](xs, sumOf(xs))
		check("seconds", 1/nozzle.SecondsPrecision, ys, sum, nozzle.RoundSeconds)
	}
}

// Rows rounded apart would not always add up: the test above shows
// something.
func TestApportion_RoundedApartDiffers(t *testing.T) {
	xs := []float64{0.15e-10, 0.15e-10, 0.15e-10, 0.15e-10}
	apart := 0.0
	for _, x := range xs {
		apart += nozzle.RoundUSD(x)
	}
	ys, sum := apportion[usdGrid](xs, sumOf(xs))
	if apart != 0 || sum != 1e-10 || ys[0] != 1e-10 || ys[1]+ys[2]+ys[3] != 0 {
		t.Fatalf("rounded apart %v; apportioned %v, sum %v", apart, ys, sum)
	}
}

// A total a step off the rows' sum (the GPU's cost as it reads, less the
// active costs as they read) is still met, each row within one step,
// never a zero row made negative or above zero.
func TestApportion_GivenTotal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		n := 1 + r.IntN(8)
		xs := splitRandom(r, math.Pow(10, -8+r.Float64()*10), n)
		exact := sumOf(xs)
		total := nozzle.RoundUSD(nozzle.RoundUSD(exact) + float64(r.IntN(3)-1)*nozzle.USDPrecision)
		if total < 0 || exact == 0 {
			continue
		}
		ys, sum := apportion[usdGrid](xs, total)
		var got int64
		for i, y := range ys {
			if d := math.Abs(y/nozzle.USDPrecision - xs[i]/nozzle.USDPrecision); d > 2+1e-6 || (xs[i] == 0 && y != 0 && n > 1) || y < 0 {
				t.Fatalf("row %v reads %v (total %v of %v)", xs[i], y, total, exact)
			}
			got += int64(math.Round(y / nozzle.USDPrecision))
		}
		if sum != total || got != int64(math.Round(total/nozzle.USDPrecision)) {
			t.Fatalf("rows %v sum to %d steps, want %v", ys, got, total)
		}
	}
}

// splitRandom splits total into n random parts, some of them zero.
func splitRandom(r *rand.Rand, total float64, n int) []float64 {
	w := make([]float64, n)
	sum := 0.0
	for i := range w {
		if r.IntN(6) > 0 {
			w[i] = r.ExpFloat64()
		}
		sum += w[i]
	}
	xs := make([]float64, n)
	for i := range xs {
		if sum > 0 {
			xs[i] = total * w[i] / sum
		}
	}
	return xs
}

func sumOf(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

// Figures too large for whole steps are rounded apart, their sum a
// gridSum's, as before.
func TestApportion_Large(t *testing.T) {
	ys, sum := apportion[usdGrid]([]float64{1e300, 0.5}, 1e300)
	if ys[0] != 1e300 || ys[1] != 0.5 || sum != 1e300+0.5 {
		t.Fatalf("apportioned %v, sum %v", ys, sum)
	}
	ys, sum = apportion[usdGrid]([]float64{math.NaN()}, math.NaN())
	if !math.IsNaN(ys[0]) || !math.IsNaN(sum) {
		t.Fatalf("NaN apportioned to %v, sum %v", ys, sum)
	}
}
