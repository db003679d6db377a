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

// TestReport_USDWithoutFloatNoise: a report over usage that costs and is
// charged 1.5e-6 USD in all, summed from requests of 1e-7 USD each, says
// 0.0000015 in its JSON, not 0.0000014999999999999996: every USD figure
// of the rows, the total and the GPU is clean, and the total's figures
// are still the sums of the rows'.
func TestReport_USDWithoutFloatNoise(t *testing.T) {
	ctx := context.Background()
	start := date("2026-03-04T10:00:00Z")
	for _, policy := range []string{nozzle.IdleProrata, nozzle.IdleOperator} {
		t.Run(policy, func(t *testing.T) {
			// 0.1 USD per million prompt tokens: 1e-7 USD a token; 0.001
			// device seconds at 0.36 USD an hour: 1e-7 USD of GPU time.
			l, a, b := noiseLedger(t, policy, start)
			if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{{RuntimeID: "rt", Seq: 1, Start: start, End: start.Add(time.Hour),
				ActiveSeconds: 0.015, IdleSeconds: 3600 - 0.015, RatePerHour: 0.36}}); err != nil {
				t.Fatal(err)
			}
			var evs []nozzle.UsageEvent
			for i := range 15 {
				ten := a.ID
				if i >= 10 {
					ten = b.ID
				}
				evs = append(evs, nozzle.UsageEvent{RequestID: "r" + strconv.Itoa(i), TenantID: ten, Model: "m", Status: nozzle.UsageOK,
					Time: start.Add(time.Duration(i) * time.Second), PromptTokens: 1, DeviceSeconds: 0.001, RatePerHour: 0.36})
			}
			var exact float64
			for i := range evs {
				ev := mustRecord(t, l, evs[i])
				exact += ev.ChargeUSD
			}
			if exact == 1.5e-6 {
				t.Fatalf("the charges sum to 1.5e-6 exactly in float64: the test shows no noise")
			}

			for _, q := range []nozzle.ReportQuery{
				{Start: start, End: start.Add(time.Hour), GroupBy: []string{nozzle.GroupTenant}},
				{Start: start, End: start.Add(time.Hour), GroupBy: []string{nozzle.GroupHour, nozzle.GroupTenant}},
				{Start: start, End: start.Add(time.Hour)},
			} {
				rep := mustReport(t, l, q)
				js, err := json.Marshal(rep)
				if err != nil {
					t.Fatal(err)
				}
				s := string(js)
				if !strings.Contains(s, `"charged_usd":0.0000015,`) {
					t.Errorf("group by %v: the total's charge is not 0.0000015: %s", q.GroupBy, s)
				}
				if policy == nozzle.IdleOperator && !strings.Contains(s, `"active_cost_usd":0.0000015,`) {
					t.Errorf("group by %v: the total's active cost is not 0.0000015: %s", q.GroupBy, s)
				}
				checkCleanFigures(t, s)
				checkTotalIsSum(t, rep)
			}
		})
	}
}

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
			l, a, b := noiseLedger(t, policy, start)
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

// checkCleanFigures fails unless every figure of the JSON js reads as the
// decimal it stands for: each "…_usd" number a whole number of 1e-10 USD,
// each "…_seconds" number of nanoseconds, the utilization and the saving
// percent of millionths, written with at most 10, 9 and 6 decimals.
// noiseLedger is the ledger of the float-noise tests: the idle policy,
// reports two hours after start, 0.1 USD per million prompt tokens (1e-7
// USD a token), tenants acme and bolt.
func noiseLedger(t *testing.T, policy string, start time.Time) (*billing.Ledger, *nozzle.Tenant, *nozzle.Tenant) {
	t.Helper()
	l := mustOpen(t, billing.Options{IdlePolicy: policy, Now: func() time.Time { return start.Add(2 * time.Hour) },
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.1}})
	return l, mustTenant(t, l, "acme"), mustTenant(t, l, "bolt")
}

func checkCleanFigures(t *testing.T, js string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(k, x)
			}
		case []any:
			for _, x := range v {
				walk(key, x)
			}
		case float64:
			decimals := 0
			switch {
			case strings.HasSuffix(key, "_usd"):
				decimals = 10
			case strings.HasSuffix(key, "_seconds"):
				decimals = 9
			case key == "utilization" || key == "saving_percent":
				decimals = 6
			default:
				return
			}
			text := strconv.FormatFloat(v, 'f', -1, 64)
			if i := strings.IndexByte(text, '.'); i >= 0 && len(text)-i-1 > decimals {
				t.Errorf("%s = %s: float noise in the figure", key, text)
			}
		}
	}
	walk("", v)
}

// checkTotalIsSum fails unless each USD and seconds figure of the report's
// total is the sum of the rows' (a dedicated GPU by hour or day aside).
func checkTotalIsSum(t *testing.T, rep *nozzle.Report) {
	t.Helper()
	var sum nozzle.ReportRow
	for _, r := range rep.Rows {
		sum.DeviceSeconds += r.DeviceSeconds
		sum.IdleSeconds += r.IdleSeconds
		sum.ActiveCostUSD += r.ActiveCostUSD
		sum.IdleCostUSD += r.IdleCostUSD
		sum.CostUSD += r.CostUSD
		sum.ChargedUSD += r.ChargedUSD
		sum.MarginUSD += r.MarginUSD
		sum.DedicatedUSD += r.DedicatedUSD
	}
	for _, f := range []struct {
		name       string
		rows, tot  float64
		timeGroups bool
	}{
		{"device_seconds", sum.DeviceSeconds, rep.Total.DeviceSeconds, false},
		{"idle_seconds", sum.IdleSeconds, rep.Total.IdleSeconds, false},
		{"active_cost_usd", sum.ActiveCostUSD, rep.Total.ActiveCostUSD, false},
		{"idle_cost_usd", sum.IdleCostUSD, rep.Total.IdleCostUSD, false},
		{"cost_usd", sum.CostUSD, rep.Total.CostUSD, false},
		{"charged_usd", sum.ChargedUSD, rep.Total.ChargedUSD, false},
		{"margin_usd", sum.MarginUSD, rep.Total.MarginUSD, false},
		{"dedicated_usd", sum.DedicatedUSD, rep.Total.DedicatedUSD, true},
	} {
		if f.timeGroups && len(rep.Rows) > 0 && !rep.Rows[0].Time.IsZero() {
			continue
		}
		round := nozzle.RoundUSD
		if strings.HasSuffix(f.name, "_seconds") {
			round = nozzle.RoundSeconds
		}
		if round(f.rows) != f.tot {
			t.Errorf("group by %v: total %s = %v, the rows add up to %v", rep.GroupBy, f.name, f.tot, f.rows)
		}
	}
	r := rep.Total
	if nozzle.RoundUSD(r.ActiveCostUSD+r.IdleCostUSD) != r.CostUSD || nozzle.RoundUSD(r.ChargedUSD-r.CostUSD) != r.MarginUSD {
		t.Errorf("group by %v: total %+v: cost is not active + idle, or margin not charged − cost", rep.GroupBy, r)
	}
}
