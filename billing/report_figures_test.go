package billing_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestReport_SecondsWithoutFloatNoise: a report over a tenant's requests
// of 0.001 device seconds each, ten of them, says 0.01 in its JSON, not
// 0.010000000000000002, and the GPU's seconds summed from intervals of a
// tenth of a second read as the decimals they are: every seconds figure
// of the rows, the total, the GPU and its series is clean, and so are the
// utilization and the saving percent; the total's seconds are still the
// sums of the rows'.
func TestReport_SecondsWithoutFloatNoise(t *testing.T) {
	ctx := context.Background()
	start := date("2026-03-04T10:00:00Z")
	for _, policy := range []string{nozzle.IdleProrata, nozzle.IdleOperator} {
		t.Run(policy, func(t *testing.T) {
			l := mustOpen(t, billing.Options{IdlePolicy: policy, Now: func() time.Time { return start.Add(2 * time.Hour) },
				DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.1}})
			a, b := mustTenant(t, l, "acme"), mustTenant(t, l, "bolt")
			// bolt's one request of 0.0005 s splits the idle time in
			// shares that read with noise unrounded
			var ivs []nozzle.CapacityInterval
			var uptime, active float64
			for i := range 10 {
				at := start.Add(time.Duration(i) * 100 * time.Millisecond)
				ivs = append(ivs, nozzle.CapacityInterval{RuntimeID: "rt", Seq: uint64(i + 1), Start: at, End: at.Add(100 * time.Millisecond),
					ActiveSeconds: 0.001, IdleSeconds: 0.099, RatePerHour: 0.36})
				uptime += 0.1
				active += 0.001
			}
			if err := l.RecordCapacity(ctx, ivs); err != nil {
				t.Fatal(err)
			}
			var device float64
			for i := range 10 {
				mustRecord(t, l, nozzle.UsageEvent{RequestID: "r" + strconv.Itoa(i), TenantID: a.ID, Model: "m", Status: nozzle.UsageOK,
					Time: start.Add(time.Duration(i) * time.Second), PromptTokens: 1, DeviceSeconds: 0.001, RatePerHour: 0.36})
				device += 0.001
			}
			mustRecord(t, l, nozzle.UsageEvent{RequestID: "b", TenantID: b.ID, Model: "m", Status: nozzle.UsageOK,
				Time: start.Add(time.Minute), PromptTokens: 1, DeviceSeconds: 0.0005, RatePerHour: 0.36})
			if device == 0.01 || uptime == 1 || active == 0.01 {
				t.Fatalf("the seconds sum to 0.01 and 1 exactly in float64: the test shows no noise")
			}

			for _, q := range []nozzle.ReportQuery{
				{Start: start, End: start.Add(time.Hour), GroupBy: []string{nozzle.GroupTenant}},
				{Start: start, End: start.Add(time.Hour), GroupBy: []string{nozzle.GroupHour, nozzle.GroupTenant}},
				{Start: start, End: start.Add(time.Hour), GPUStep: nozzle.GroupHour},
			} {
				rep := mustReport(t, l, q)
				js, err := json.Marshal(rep)
				if err != nil {
					t.Fatal(err)
				}
				s := string(js)
				byTenant := len(q.GroupBy) > 0
				if byTenant && !strings.Contains(s, `"device_seconds":0.01,`) || !strings.Contains(s, `"device_seconds":0.0105,`) ||
					strings.Contains(s, "0.010000000000000002") {
					t.Errorf("group by %v: acme's device seconds are not 0.01 and the total's 0.0105: %s", q.GroupBy, s)
				}
				g, _ := json.Marshal(rep.GPU)
				for _, want := range []string{`"uptime_seconds":1,`, `"active_seconds":0.01,`, `"idle_seconds":0.99,`, `"utilization":0.01,`} {
					if !strings.Contains(string(g), want) {
						t.Errorf("group by %v: the GPU figures lack %s: %s", q.GroupBy, want, g)
					}
				}
				checkCleanFigures(t, s)
				checkTotalIsSum(t, rep)
			}
		})
	}
}
