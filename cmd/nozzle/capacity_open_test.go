package main

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// TestServe_GPUFiguresBeforeIntervalCloses: right after a few requests the
// operator's report shows the GPU up, busy and costing money, counted from
// the runtime's open capacity interval, without waiting for it to close: its
// active time is the runtime's own, tenants' costs add up to the GPU's
// under the prorata policy.
func TestServe_GPUFiguresBeforeIntervalCloses(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	admin, err := os.ReadFile(filepath.Join(m.Config.Data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		resp, b := post(t, base+"/v1/completions", key, `{"model":"base","prompt":"Once upon","max_tokens":8,"temperature":0}`)
		if resp.StatusCode != 200 {
			t.Fatalf("completion: %d %s", resp.StatusCode, b)
		}
	}
	// Nothing runs now: the runtime's active time stays where it is.
	active := m.Runtime.Stats().ActiveSeconds
	if active <= 0 {
		t.Fatalf("runtime stats %+v", m.Runtime.Stats())
	}

	report := func() nozzle.Report {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/admin/report?group_by=tenant", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep nozzle.Report
		if resp.StatusCode != 200 {
			t.Fatalf("report: %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	// The gateway pulls capacity every 10 s; a pull after the requests
	// brings their active time, open interval or not.
	deadline := time.Now().Add(25 * time.Second)
	for {
		rep := report()
		g := rep.GPU
		if g != nil && math.Abs(g.ActiveSeconds-active) <= 1e-6 {
			up := m.Runtime.Stats().UptimeSeconds
			if g.UptimeSeconds <= 0 || g.UptimeSeconds > up+1e-6 || g.UptimeSeconds < up-12 || g.CostUSD <= 0 || g.Utilization <= 0 {
				t.Fatalf("GPU %+v; the runtime is up %v s, %v s active", g, up, active)
			}
			sum := 0.0
			for _, r := range rep.Rows {
				sum += r.CostUSD
			}
			// each row's cost and the GPU's are rounded apart, to 1e-10 USD
			if tol := 1e-9*g.CostUSD + float64(len(rep.Rows)+1)*nozzle.USDPrecision/2; rep.IdlePolicy == nozzle.IdleProrata && math.Abs(sum-g.CostUSD) > tol {
				t.Fatalf("tenants' costs add up to %v, the GPU's is %v", sum, g.CostUSD)
			}
			closed, _ := m.Ledger.LastCapacitySeq(context.Background(), m.Config.RuntimeID)
			t.Logf("GPU %.2f s up, %.3f s active, $%.6f; %d intervals closed", g.UptimeSeconds, g.ActiveSeconds, g.CostUSD, closed)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GPU %+v; the runtime's active time is %v s", g, active)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
