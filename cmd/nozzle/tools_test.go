package main

import (
	"testing"
	"time"
)

// TestReportQuery_StartOnly checks that `nozzle report --start X` covers
// what the API's ?start=X does: from X to the end of the current month.
func TestReportQuery_StartOnly(t *testing.T) {
	q, err := reportQuery("2026-01-05T00:00:00Z", "", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	monthEnd := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
	if !q.Start.Equal(time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)) || !q.End.Equal(monthEnd) {
		t.Errorf("period %v – %v, want 2026-01-05 – %v", q.Start, q.End, monthEnd)
	}
}
