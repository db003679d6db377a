package nozzle

import (
	"strings"
	"testing"
	"time"
)

func TestParseReportTime(t *testing.T) {
	nov1 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in    string
		isEnd bool
		want  time.Time
	}{
		{"2026-11-01T00:00:00Z", false, nov1},
		{"2026-11-01T01:00:00+01:00", true, nov1},
		{"2026-11-01", false, nov1},
		// a date as the end: through the end of that day
		{"2026-11-30", true, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-12-31", true, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		// unix seconds, as OpenAI's usage API takes them; the same at either end
		{"1793491200", false, nov1},
		{"1793491200", true, nov1},
		{"0", false, time.Unix(0, 0).UTC()},
	} {
		got, err := ParseReportTime(c.in, c.isEnd)
		if err != nil || !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("ParseReportTime(%q, %v) = %v, %v; want %v", c.in, c.isEnd, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"yesterday", `"yesterday" is not ` + ReportTimeForms},
		{"", `"" is not `},
		{"-5", `"-5" is not `},
		{"2026-13-01", `"2026-13-01" is not `},
		{"2026-11-01 00:00:00", `is not `},
		{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z is out of range; use a time from 1970 on"},
		{"1793491200000", "1793491200000 is out of range"}, // milliseconds
		{"99999999999999999999999", "is out of range"},
	} {
		if _, err := ParseReportTime(c.in, false); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseReportTime(%q) err = %v, want one with %q", c.in, err, c.want)
		}
	}
}
