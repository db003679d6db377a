package nozzle_test

import (
	"testing"

	"github.com/nozzle-ai/nozzle"
)

func TestPageQuery_Validate(t *testing.T) {
	for _, q := range []nozzle.PageQuery{{}, {Limit: 1}, {Limit: nozzle.MaxPageLimit, Order: nozzle.Descending, After: "x"}, {Before: "y", Order: nozzle.Ascending}} {
		if err := q.Validate(); err != nil {
			t.Errorf("%+v: %v", q, err)
		}
	}
	for _, c := range []struct {
		q                      nozzle.PageQuery
		param, reason, message string
	}{
		{nozzle.PageQuery{Limit: -1}, "limit", "integer_below_min_value", "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got -1 instead."},
		{nozzle.PageQuery{Limit: 1001}, "limit", "integer_above_max_value", "Invalid 'limit': integer above maximum value. Expected a value <= 1000, but got 1001 instead."},
		{nozzle.PageQuery{Order: "newest"}, "order", "invalid_value", "Invalid value: 'newest'. Supported values are: 'asc' and 'desc'."},
		{nozzle.PageQuery{After: "a", Before: "b"}, "before", "invalid_parameter_combination", "Give either 'after' or 'before', not both."},
	} {
		e := nozzle.AsError(c.q.Validate())
		if e == nil || e.Code != nozzle.EINVALID || e.Param != c.param || e.Reason != c.reason || e.Message != c.message {
			t.Errorf("%+v: %+v", c.q, e)
		}
	}
	if got := (nozzle.PageQuery{}).PageLimit(); got != nozzle.DefaultPageLimit {
		t.Errorf("default limit %d", got)
	}
}
