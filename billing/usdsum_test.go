package billing

import (
	"math"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// A total of many rows is their exact sum on the 1e-10 USD grid, where a
// float sum would drift off it; figures beyond the grid fall back to it.
func TestUSDSum(t *testing.T) {
	var u usdSum
	var float float64
	for range 100000 {
		u.add(1.2345678901)
		float += 1.2345678901
	}
	if got, want := u.value(), 123456.78901; got != want {
		t.Errorf("sum = %v, want %v", got, want)
	}
	if nozzle.RoundUSD(float) == 123456.78901 {
		t.Errorf("the float sum stays on the grid: the test shows nothing")
	}
	var large usdSum
	large.add(0.5)
	large.add(1e300)
	if got := large.value(); got != 1e300+0.5 {
		t.Errorf("large sum = %v", got)
	}
	var neg usdSum
	neg.add(-0.1)
	neg.add(-0.2)
	if got := neg.value(); got != -0.3 || math.Signbit(new(usdSum).value()) {
		t.Errorf("negative sum = %v", got)
	}
}
