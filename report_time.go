package nozzle

import (
	"fmt"
	"strconv"
	"time"
)

// ReportTimeForms names the forms ParseReportTime accepts, for a refusal.
const ReportTimeForms = "an RFC 3339 time (2026-11-01T00:00:00Z), a date (2026-11-01) or unix seconds (1793491200)"

// ParseReportTime parses a report period's bound, as /v1/usage,
// /admin/report and `nozzle report` take it: an RFC 3339 time, a date
// (YYYY-MM-DD, 00:00 UTC that day) or unix seconds (as OpenAI's usage API
// takes them). A date given as the period's end (isEnd) means the end of
// that day, the next day's 00:00 UTC, so that start=2026-11-01 and
// end=2026-11-30 cover the 30 days of November. Times from before 1970 or
// after the year 9000 are refused. The error names neither the parameter
// nor the flag: the caller adds whichever it takes.
func ParseReportTime(s string, isEnd bool) (time.Time, error) {
	t, ok := parseReportTime(s, isEnd)
	if !ok {
		return time.Time{}, fmt.Errorf("%q is not %s", s, ReportTimeForms)
	}
	if t.Year() < 1970 || t.Year() > 9000 {
		return time.Time{}, fmt.Errorf("%s is out of range; use a time from 1970 on", s)
	}
	return t, nil
}

func parseReportTime(s string, isEnd bool) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), true
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if isEnd {
			t = t.AddDate(0, 0, 1)
		}
		return t, true
	}
	if allDigits(s) {
		// Past 12 digits (the year 33658) the year check refuses it
		// anyway; the bound keeps the multiplication to nanoseconds in
		// range.
		if len(s) > 12 {
			return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), true
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return time.Unix(n, 0).UTC(), true
		}
	}
	return time.Time{}, false
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
