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
			l := mustOpen(t, billing.Options{IdlePolicy: policy, Now: func() time.Time { return start.Add(2 * time.Hour) },
				DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.1}})
			a, b := mustTenant(t, l, "acme"), mustTenant(t, l, "bolt")
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

// checkCleanFigures fails unless every figure of the JSON js reads as the
// decimal it stands for: each "…_usd" number a whole number of 1e-10 USD,
// each "…_seconds" number of nanoseconds, the utilization and the saving
// percent of millionths, written with at most 10, 9 and 6 decimals.
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
