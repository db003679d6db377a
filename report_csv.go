package nozzle

import (
	"encoding/csv"
	"io"
	"slices"
	"strconv"
	"time"
)

// CSVText makes a free-text CSV cell safe to open in a spreadsheet: a
// cell that begins with '=', '+', '-', '@', a tab or a carriage return is
// taken for a formula by Excel, LibreOffice and Google Sheets (CSV
// injection), so such a cell gets a leading single quote, which those
// applications show as text (OWASP's advice). Every CSV the product
// writes passes its tenant-controlled text (names, ids) through it;
// numbers, which may be negative, are written as they are.
func CSVText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

// WriteCSV writes the report as CSV: a header, one line per row, and a
// last line for the total (its first column says "total"). Group columns
// appear only for the report's group keys; their text goes through
// CSVText.
func (r *Report) WriteCSV(w io.Writer) error { return r.writeCSV(w, true) }

// WriteTenantCSV writes the report as a tenant sees it: as WriteCSV, but
// without the operator's margin.
func (r *Report) WriteTenantCSV(w io.Writer) error { return r.writeCSV(w, false) }

func (r *Report) writeCSV(w io.Writer, margin bool) error {
	cw := csv.NewWriter(w)
	has := func(g string) bool { return slices.Contains(r.GroupBy, g) }
	var header []string
	timeCol := has(GroupHour) || has(GroupDay)
	if timeCol {
		header = append(header, "time")
	}
	if has(GroupTenant) {
		header = append(header, "tenant_id", "tenant")
	}
	if has(GroupAdapter) {
		header = append(header, "adapter_id", "adapter")
	}
	if len(header) == 0 {
		header = append(header, "period")
	}
	groups := len(header)
	header = append(header, "requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "device_seconds", "idle_seconds",
		"active_cost_usd", "idle_cost_usd", "cost_usd", "charged_usd")
	if margin {
		header = append(header, "margin_usd")
	}
	header = append(header, "dedicated_usd", "saving_percent", "failed_requests", "failed_prompt_tokens", "failed_completion_tokens",
		"canceled_requests", "interrupted_requests", "batch_requests", "batch_prompt_tokens", "batch_completion_tokens", "batch_charge_usd")
	if err := cw.Write(header); err != nil {
		return err
	}
	line := func(row *ReportRow, total bool) []string {
		var rec []string
		switch {
		case total:
			rec = append(rec, "total")
			for len(rec) < groups {
				rec = append(rec, "")
			}
		default:
			if timeCol {
				rec = append(rec, row.Time.UTC().Format(time.RFC3339))
			}
			if has(GroupTenant) {
				rec = append(rec, CSVText(row.TenantID), CSVText(row.TenantName))
			}
			if has(GroupAdapter) {
				rec = append(rec, CSVText(row.AdapterID), CSVText(row.AdapterName))
			}
			if len(rec) == 0 {
				rec = append(rec, r.Start.UTC().Format(time.RFC3339)+"/"+r.End.UTC().Format(time.RFC3339))
			}
		}
		i := func(v int64) string { return strconv.FormatInt(v, 10) }
		// Sums of many charges carry float noise in their last digits
		// (0.0011654999999999999): 15 significant digits, no exponent.
		f := func(v float64) string {
			r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 15, 64), 64)
			return strconv.FormatFloat(r, 'f', -1, 64)
		}
		rec = append(rec, i(row.Requests), i(row.PromptTokens), i(row.CachedPromptTokens), i(row.CompletionTokens), f(row.DeviceSeconds),
			f(row.IdleSeconds), f(row.ActiveCostUSD), f(row.IdleCostUSD), f(row.CostUSD), f(row.ChargedUSD))
		if margin {
			rec = append(rec, f(row.MarginUSD))
		}
		return append(rec, f(row.DedicatedUSD), f(row.SavingPercent), i(row.FailedRequests), i(row.FailedPromptTokens),
			i(row.FailedCompletionTokens), i(row.CanceledRequests), i(row.InterruptedRequests), i(row.BatchRequests), i(row.BatchPromptTokens),
			i(row.BatchCompletionTokens), f(row.BatchChargeUSD))
	}
	for i := range r.Rows {
		if err := cw.Write(line(&r.Rows[i], false)); err != nil {
			return err
		}
	}
	if err := cw.Write(line(&r.Total, true)); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
