package gateway

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nozzle-ai/nozzle"
)

// attemptLedger is the ledger the gateway records usage with. It gives the
// event of a completed idempotent request — recorded under its key's id
// (idempotencyID), with the answer stored for replays — the id of the
// attempt that completed it (AttemptID): the digest of the tenant and the
// X-Request-Id that attempt answered with, the id a client-chosen
// X-Request-Id is kept under (clientRequestID). GET
// /v1/usage/requests/{id} then finds the request by the X-Request-Id its
// client saw as well as by its key, and a later request cannot take that
// id. The X-Request-Id is read from the stored answer, whose id is
// "chatcmpl-" or "cmpl-" and that X-Request-Id.
type attemptLedger struct{ nozzle.Ledger }

func (l attemptLedger) RecordUsage(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
	if ev.AttemptID == "" && len(ev.Response) > 0 {
		if id := answeredRequestID(ev.Response); id != "" {
			ev.AttemptID = clientRequestID(ev.TenantID, id)
		}
	}
	return l.Ledger.RecordUsage(ctx, ev)
}

// attemptCheckpointLedger is attemptLedger for a ledger that keeps usage
// checkpoints, which it keeps offering.
type attemptCheckpointLedger struct {
	attemptLedger
	ckpt nozzle.UsageCheckpointer
}

func (l attemptCheckpointLedger) CheckpointUsage(ctx context.Context, ev *nozzle.UsageEvent) error {
	return l.ckpt.CheckpointUsage(ctx, ev)
}

// withAttempts wraps a ledger in attemptLedger, keeping its checkpoints.
func withAttempts(l nozzle.Ledger) nozzle.Ledger {
	if c, ok := l.(nozzle.UsageCheckpointer); ok {
		return attemptCheckpointLedger{attemptLedger{l}, c}
	}
	return attemptLedger{l}
}

// answeredRequestID is the X-Request-Id a stored answer (storedResponse)
// was given with, or "".
func answeredRequestID(stored []byte) string {
	_, _, answer := splitStored(stored)
	var a struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(answer, &a) != nil {
		return ""
	}
	for _, p := range []string{"chatcmpl-", "cmpl-"} {
		if id, ok := strings.CutPrefix(a.ID, p); ok && id != "" {
			return id
		}
	}
	return ""
}
