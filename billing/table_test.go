package billing_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

var update = flag.Bool("update", false, "update golden files")

func TestWriteTable(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.5, CompletionPerMillionUSD: 1.5, BatchDiscountPercent: 50, CachedPromptPerMillionUSD: 0.25}})
	a := mustTenant(t, l, "acme")
	start := date("2026-03-04T10:00:00Z")
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{{RuntimeID: "rt", Seq: 1, Start: start, End: start.Add(2 * time.Hour), ActiveSeconds: 720, IdleSeconds: 6480, RatePerHour: 2}}); err != nil {
		t.Fatal(err)
	}
	sql := &nozzle.Adapter{TenantID: a.ID, Name: "sql", AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32), Rank: 8, TargetModules: []string{"q_proj"}}}
	if err := l.CreateAdapter(ctx, sql); err != nil {
		t.Fatal(err)
	}
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: a.ID, AdapterID: sql.ID, AdapterName: "sql", Time: start.Add(time.Minute), PromptTokens: 1200, CachedPromptTokens: 1024, CompletionTokens: 300, DeviceSeconds: 500, RatePerHour: 2})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "2", TenantID: a.ID, Time: start.Add(61 * time.Minute), PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 220, RatePerHour: 2})
	// a line of a batch: charged half, and told apart under the table
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "3", TenantID: a.ID, Time: start.Add(62 * time.Minute), PromptTokens: 1000, CompletionTokens: 200, DeviceSeconds: 0, RatePerHour: 2, Batch: true})
	rep := mustReport(t, l, nozzle.ReportQuery{Start: start, End: start.Add(2 * time.Hour), GroupBy: []string{"hour", "adapter"}})
	// Tenant ids are random: show the rows as a tenant would see them.
	var buf bytes.Buffer
	if err := billing.WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "table.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("table differs from %s (run with -update):\n%s", golden, buf.String())
	}
}

// TestWriteTable_SmallAmountsAndOutcomes: a charge of a few tokens, too
// small for cents, shows its digits rather than $0.00 (nor a small loss
// as -$0.00), as the console shows it (nozzle.FormatUSD), and the table says how many requests failed,
// were canceled or were interrupted, as the CSV's and JSON's columns do.
func TestWriteTable_SmallAmountsAndOutcomes(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6}})
	a := mustTenant(t, l, "acme")
	start := date("2026-03-04T10:00:00Z")
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{{RuntimeID: "rt", Seq: 1, Start: start, End: start.Add(time.Hour), ActiveSeconds: 1, IdleSeconds: 3599, RatePerHour: 2}}); err != nil {
		t.Fatal(err)
	}
	ev := func(id, status string) {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: id, TenantID: a.ID, Time: start.Add(time.Minute), Status: status,
			PromptTokens: 20, CompletionTokens: 32, DeviceSeconds: 0.02, RatePerHour: 2})
	}
	ev("ok", nozzle.UsageOK)
	ev("failed", nozzle.UsageFailed)
	ev("canceled1", nozzle.UsageCanceled)
	ev("canceled2", nozzle.UsageCanceled)
	rep := mustReport(t, l, nozzle.ReportQuery{Start: start, End: start.Add(time.Hour), GroupBy: []string{"adapter"}})
	var buf bytes.Buffer
	if err := billing.WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	// three charged requests of 20 + 32 tokens: 3 × 0.0000232
	for _, want := range []string{"  $0.0000696  ", "Of the 4 requests: 1 failed, not charged · 2 canceled, charged for what they produced.", "charged $0.0000696,"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	for _, bad := range []string{" $0.00 ", "-$0.00 ", "interrupted"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q in\n%s", bad, out)
		}
	}
}

// TestWriteTable_SubSecondGPU: a GPU busy for a fraction of a second
// shows that fraction, in the console's units, beside its utilisation,
// never "active 0s (utilisation 0.4%)"; a saving short of 100% shows the
// digits the console shows (99.96%, not 99.9).
func TestWriteTable_SubSecondGPU(t *testing.T) {
	rep := &nozzle.Report{Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z"), IdlePolicy: nozzle.IdleProrata,
		Total: nozzle.ReportRow{Requests: 1, CostUSD: 0.0008, DedicatedUSD: 2, SavingPercent: 99.96},
		GPU:   &nozzle.GPUSummary{GPUFigures: nozzle.GPUFigures{UptimeSeconds: 50, ActiveSeconds: 0.222886388, IdleSeconds: 49.777113612, Utilization: 0.004458, CostUSD: 0.0277}}}
	var buf bytes.Buffer
	if err := billing.WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GPU: up 50.00 s, active 0.22 s (utilisation 0.4%), cost $0.0277,", "  $0.0008  ", "  $2.00  99.96%\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in\n%s", want, buf.String())
		}
	}
}

// TestWriteTable_SmallFigures: a request's hundredths of a second on the
// GPU, and a second's work in an hour's uptime, read as what they are,
// not as 0.0 and 0.0%.
func TestWriteTable_SmallFigures(t *testing.T) {
	rep := &nozzle.Report{Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z"), IdlePolicy: nozzle.IdleProrata,
		Rows:  []nozzle.ReportRow{{Requests: 1, DeviceSeconds: 0.009, IdleSeconds: 0.004}},
		Total: nozzle.ReportRow{Requests: 1, DeviceSeconds: 0.009, IdleSeconds: 0.004},
		GPU:   &nozzle.GPUSummary{GPUFigures: nozzle.GPUFigures{UptimeSeconds: 3600, ActiveSeconds: 1, IdleSeconds: 3599, Utilization: 1.0 / 3600}}}
	var buf bytes.Buffer
	if err := billing.WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"  0.01 s  0.004 s  ", "active 1.00 s (utilisation 0.03%)"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	for _, bad := range []string{" 0.0 ", " 0.00 s ", "utilisation 0.0%"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q in\n%s", bad, out)
		}
	}
}
