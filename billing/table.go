package billing

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// WriteTable renders a report as an aligned text table for the command
// line: one line per row, a total line, and for operator reports the GPU
// and outbox summaries. Times, percentages and money read as the console
// writes them (nozzle.FormatSeconds, FormatPercent, FormatUSD): a small
// figure above zero never reads as 0.
func WriteTable(w io.Writer, r *nozzle.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	has := func(g string) bool { return slices.Contains(r.GroupBy, g) }
	timeFmt := "2006-01-02 15:04"
	if has(nozzle.GroupDay) {
		timeFmt = "2006-01-02"
	}
	fmt.Fprintf(w, "Usage and cost %s – %s (UTC), idle policy %s\n\n", r.Start.UTC().Format("2006-01-02 15:04"), r.End.UTC().Format("2006-01-02 15:04"), r.IdlePolicy)
	var head string
	if has(nozzle.GroupHour) || has(nozzle.GroupDay) {
		head += "time\t"
	}
	if has(nozzle.GroupTenant) {
		head += "tenant\t"
	}
	if has(nozzle.GroupAdapter) {
		head += "adapter\t"
	}
	if head == "" {
		head = "\t"
	}
	fmt.Fprintln(tw, head+"requests\tprompt tok\tcached tok\tcompl tok\tdevice\tidle\tcost\tcharged\tmargin\tdedicated\tsaving\t")
	line := func(row *nozzle.ReportRow, label string) {
		var cells string
		if label != "" {
			cells = label + "\t"
			for i := 1; i < countTabs(head); i++ {
				cells += "\t"
			}
		} else {
			if has(nozzle.GroupHour) || has(nozzle.GroupDay) {
				cells += row.Time.UTC().Format(timeFmt) + "\t"
			}
			if has(nozzle.GroupTenant) {
				cells += orDash(row.TenantName, row.TenantID) + "\t"
			}
			if has(nozzle.GroupAdapter) {
				name := row.AdapterName
				if row.AdapterID == "" && (name == "" || name == nozzle.BaseModelAlias) {
					name = "(base model)"
				}
				cells += orDash(name, row.AdapterID) + "\t"
			}
			if cells == "" {
				cells = "\t"
			}
		}
		fmt.Fprintf(tw, "%s%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", cells,
			row.Requests, row.PromptTokens, row.CachedPromptTokens, row.CompletionTokens, nozzle.FormatSeconds(row.DeviceSeconds), nozzle.FormatSeconds(row.IdleSeconds),
			nozzle.FormatUSD(row.CostUSD), nozzle.FormatUSD(row.ChargedUSD), nozzle.FormatUSD(row.MarginUSD), nozzle.FormatUSD(row.DedicatedUSD), nozzle.FormatPercent(row.SavingPercent))
	}
	for i := range r.Rows {
		line(&r.Rows[i], "")
	}
	line(&r.Total, "total")
	if err := tw.Flush(); err != nil {
		return err
	}
	if o := r.Total.Outcomes(func(n int64) string { return strconv.FormatInt(n, 10) }); o != "" {
		fmt.Fprintf(w, "\nOf the %d requests: %s.\n", r.Total.Requests, o)
	}
	if t := &r.Total; t.BatchRequests > 0 {
		fmt.Fprintf(w, "\nBatch API: %d of the %d requests, %d prompt and %d completion tokens, charged %s (at the batch discount).\n",
			t.BatchRequests, t.Requests, t.BatchPromptTokens, t.BatchCompletionTokens, nozzle.FormatUSD(t.BatchChargeUSD))
	}
	if g := r.GPU; g != nil {
		fmt.Fprintf(w, "\nGPU: up %s, active %s (utilisation %s), cost %s, idle cost %s, left with the operator %s; charged %s, margin %s\n",
			nozzle.FormatSeconds(g.UptimeSeconds), nozzle.FormatSeconds(g.ActiveSeconds), nozzle.FormatPercent(g.Utilization*100), nozzle.FormatUSD(g.CostUSD), nozzle.FormatUSD(g.IdleCostUSD), nozzle.FormatUSD(g.OperatorIdleUSD),
			nozzle.FormatUSD(r.Total.ChargedUSD), nozzle.FormatUSD(g.MarginUSD))
	}
	if o := r.Outbox; o != nil {
		state := "off"
		if o.Enabled {
			state = "on"
		}
		fmt.Fprintf(w, "Stripe outbox (%s): %d pending, %d sent, %d failing, %d need review, %d expired", state, o.Pending, o.Sent, o.Failing, o.NeedsReview, o.Expired)
		if !o.LastSentAt.IsZero() {
			fmt.Fprintf(w, ", last sent %s", o.LastSentAt.UTC().Format(time.RFC3339))
		}
		if o.LastError != "" {
			fmt.Fprintf(w, ", last error: %s", o.LastError)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func countTabs(s string) int {
	n := 0
	for _, c := range s {
		if c == '\t' {
			n++
		}
	}
	return n
}

func orDash(a, b string) string {
	if a != "" {
		return a
	}
	if b != "" {
		return b
	}
	return "-"
}
