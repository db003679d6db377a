package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// The Batch API: POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches,
// POST /v1/batches/{id}/cancel. A batch is created "validating"; the
// batch runner (batchrun.go) validates its input file, then runs its lines
// as the tenant's requests.

// batchEndpoints are the endpoints a batch may run, with the parser of
// their request bodies (the live handlers' own).
var batchEndpoints = map[string]func(body []byte, maxChoices int) (*job, error){
	"/v1/chat/completions": parseChat,
	"/v1/completions":      parseCompletion,
	"/v1/responses":        parseResponses,
}

// maxCustomID bounds a line's custom_id, in bytes.
const maxCustomID = 512

// batchJSON is a batch as the API shows it (the SDK's Batch).
type batchJSON struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Model            string            `json:"model,omitempty"`
	Errors           *batchErrorsJSON  `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    batchCountsJSON   `json:"request_counts"`
	Usage            batchUsageJSON    `json:"usage"`
	Metadata         map[string]string `json:"metadata"`
}

type batchErrorsJSON struct {
	Object string           `json:"object"`
	Data   []batchErrorJSON `json:"data"`
}

type batchErrorJSON struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

type batchCountsJSON struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

type batchUsageJSON struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toBatchJSON(b *nozzle.Batch) batchJSON {
	out := batchJSON{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, Model: b.Model, InputFileID: b.InputFileID, CompletionWindow: b.CompletionWindow,
		Status: b.Status, OutputFileID: strOrNil(b.OutputFileID), ErrorFileID: strOrNil(b.ErrorFileID),
		CreatedAt:     b.Created.Unix(),
		InProgressAt:  unixOrNil(b.InProgressAt),
		ExpiresAt:     unixOrNil(b.ExpiresAt),
		FinalizingAt:  unixOrNil(b.FinalizingAt),
		CompletedAt:   unixOrNil(b.CompletedAt),
		FailedAt:      unixOrNil(b.FailedAt),
		ExpiredAt:     unixOrNil(b.ExpiredAt),
		CancellingAt:  unixOrNil(b.CancellingAt),
		CancelledAt:   unixOrNil(b.CancelledAt),
		RequestCounts: batchCountsJSON{Total: b.Total, Completed: b.Completed, Failed: b.Failed},
		Metadata:      b.Metadata,
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	out.Usage.InputTokens = b.Usage.InputTokens
	out.Usage.InputTokensDetails.CachedTokens = b.Usage.CachedTokens
	out.Usage.OutputTokens = b.Usage.OutputTokens
	out.Usage.TotalTokens = b.Usage.InputTokens + b.Usage.OutputTokens
	if len(b.Errors) > 0 {
		out.Errors = &batchErrorsJSON{Object: "list"}
		for _, e := range b.Errors {
			ej := batchErrorJSON{Code: e.Code, Message: e.Message, Param: strOrNil(e.Param)}
			if e.Line > 0 {
				line := e.Line
				ej.Line = &line
			}
			out.Errors.Data = append(out.Errors.Data, ej)
		}
	}
	return out
}

// lookupBatch returns the caller's batch id: the runner's copy while it
// runs (its counts are the latest), else the stored one.
func (s *Server) lookupBatch(c *fiber.Ctx, id string) (*nozzle.Batch, error) {
	p := principalFrom(c)
	if !validObjectID(batchPrefix, id) {
		return nil, nozzle.BatchNotFound(id)
	}
	b, err := s.deps.Batches.Batch(c.UserContext(), p.tenant.ID, id)
	if err != nil {
		return nil, err
	}
	if b.TenantID != p.tenant.ID {
		return nil, nozzle.BatchNotFound(id)
	}
	if cur := s.runner.current(id); cur != nil {
		return cur, nil
	}
	return b, nil
}

// createBatch handles POST /v1/batches.
func (s *Server) createBatch(c *fiber.Ctx) error {
	p := principalFrom(c)
	body, err := s.readBody(c, int64(s.cfg.BodyLimit))
	if err != nil {
		return err
	}
	var req struct {
		InputFileID      *string         `json:"input_file_id"`
		Endpoint         *string         `json:"endpoint"`
		CompletionWindow *string         `json:"completion_window"`
		Metadata         json.RawMessage `json:"metadata"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	switch {
	case req.InputFileID == nil:
		return invalidAs("missing_required_parameter", "input_file_id", "Missing required parameter: 'input_file_id'.")
	case req.Endpoint == nil:
		return invalidAs("missing_required_parameter", "endpoint", "Missing required parameter: 'endpoint'.")
	case req.CompletionWindow == nil:
		return invalidAs("missing_required_parameter", "completion_window", "Missing required parameter: 'completion_window'.")
	}
	if batchEndpoints[*req.Endpoint] == nil {
		return invalidAs("invalid_value", "endpoint", "Invalid value for 'endpoint': %q is not supported; use '/v1/chat/completions', '/v1/completions' or '/v1/responses'.", *req.Endpoint)
	}
	if *req.CompletionWindow != "24h" {
		return invalidAs("invalid_value", "completion_window", "Invalid value for 'completion_window': %q is not supported; use '24h'.", *req.CompletionWindow)
	}
	var md map[string]string
	if len(req.Metadata) > 0 && !isNull(req.Metadata) {
		if md, err = parseMetadata(req.Metadata); err != nil {
			return err
		}
	}
	f, err := s.lookupFile(c.UserContext(), p.tenant.ID, *req.InputFileID)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nozzle.Errorf(nozzle.ENOTFOUND, "No such File object: %s", *req.InputFileID).WithParam("input_file_id")
		}
		return err
	}
	if f.Purpose != nozzle.FilePurposeBatch {
		return invalidAs("invalid_value", "input_file_id", "The file %s has purpose '%s'; a batch's input file must have purpose 'batch'.", f.ID, f.Purpose)
	}
	now := s.now()
	b := &nozzle.Batch{
		ID: newObjectID(batchPrefix, now), TenantID: p.tenant.ID, KeyID: p.key.ID,
		Endpoint: *req.Endpoint, Model: firstLineModel(s.filePath(f.ID), s.cfg.BodyLimit), InputFileID: f.ID, CompletionWindow: "24h", Status: nozzle.BatchValidating,
		Metadata: md, Created: now, ExpiresAt: now.Add(nozzle.BatchWindow),
	}
	if err := s.deps.Batches.CreateBatch(c.UserContext(), b); err != nil {
		return err
	}
	out := toBatchJSON(b)
	s.runner.start(b) // b is the runner's from here on
	return c.JSON(out)
}

// getBatch handles GET /v1/batches/{id}.
func (s *Server) getBatch(c *fiber.Ctx) error {
	b, err := s.lookupBatch(c, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	return c.JSON(toBatchJSON(b))
}

// listBatches handles GET /v1/batches: after, limit (1 to 100, default
// 20), newest first.
func (s *Server) listBatches(c *fiber.Ctx) error {
	p := principalFrom(c)
	limit := 20
	if c.Context().QueryArgs().Has("limit") {
		n, err := parseLimit(c.Query("limit"))
		if err != nil {
			return err
		}
		limit = n
	}
	after := strings.Clone(c.Query("after"))
	if after != "" && !validObjectID(batchPrefix, after) {
		return nozzle.UnknownCursor("after", after)
	}
	list, more, err := s.deps.Batches.Batches(c.UserContext(), p.tenant.ID, after, limit)
	if err != nil {
		return err
	}
	out := make([]batchJSON, 0, len(list))
	for _, b := range list {
		if b.TenantID != p.tenant.ID {
			continue
		}
		if cur := s.runner.current(b.ID); cur != nil {
			b = cur
		}
		out = append(out, toBatchJSON(b))
	}
	return writePage(c, out, func(b batchJSON) string { return b.ID }, more)
}

// cancelBatch handles POST /v1/batches/{id}/cancel: no new line starts,
// the running ones finish, the batch ends "cancelled" with the output of
// the lines that ran.
func (s *Server) cancelBatch(c *fiber.Ctx) error {
	b, err := s.lookupBatch(c, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	if nozzle.BatchDone(b.Status) {
		return nozzle.Errorf(nozzle.ECONFLICT, "Cannot cancel a batch with status '%s'.", b.Status).WithReason("batch_not_cancellable")
	}
	b, err = s.runner.cancel(c.UserContext(), b)
	if err != nil {
		return err
	}
	return c.JSON(toBatchJSON(b))
}

// batchLine is one line of a batch's input file.
type batchLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// decodeBatchLine reads one line of an input file of a batch of endpoint
// and checks its frame: a JSON object with a custom_id (1 to 512 bytes),
// method POST, url endpoint and an object body. The body itself is the
// endpoint's parser's to check.
func decodeBatchLine(raw []byte, endpoint string) (*batchLine, *nozzle.BatchError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' || !utf8.Valid(raw) || !json.Valid(raw) {
		return nil, &nozzle.BatchError{Code: "invalid_json_line", Message: "This line is not a valid JSON object."}
	}
	var l batchLine
	var kinds map[string]json.RawMessage
	if err := json.Unmarshal(raw, &kinds); err != nil {
		return nil, &nozzle.BatchError{Code: "invalid_json_line", Message: "This line is not a valid JSON object."}
	}
	for _, f := range []string{"custom_id", "method", "url", "body"} {
		v, ok := kinds[f]
		if !ok || isNull(v) {
			return nil, &nozzle.BatchError{Code: "missing_required_parameter", Param: f, Message: fmt.Sprintf("Missing required parameter: '%s'.", f)}
		}
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		var te *json.UnmarshalTypeError
		param := ""
		if errors.As(err, &te) {
			param = te.Field
		}
		return nil, &nozzle.BatchError{Code: "invalid_type", Param: param, Message: fmt.Sprintf("Invalid type for '%s'.", param)}
	}
	switch {
	case l.CustomID == "" || len(l.CustomID) > maxCustomID:
		return nil, &nozzle.BatchError{Code: "invalid_value", Param: "custom_id", Message: fmt.Sprintf("'custom_id' must be 1 to %d bytes long.", maxCustomID)}
	case l.Method != "POST":
		return nil, &nozzle.BatchError{Code: "invalid_value", Param: "method", Message: fmt.Sprintf("Invalid 'method' %q: only POST is supported.", l.Method)}
	case l.URL != endpoint:
		return nil, &nozzle.BatchError{Code: "mismatched_url", Param: "url", Message: fmt.Sprintf("The url %q does not match the batch's endpoint %q.", l.URL, endpoint)}
	case len(l.Body) == 0 || l.Body[0] != '{':
		return nil, &nozzle.BatchError{Code: "invalid_type", Param: "body", Message: "'body' must be a JSON object."}
	}
	return &l, nil
}

// scanLines calls fn with each line of the file at path (1-based numbers;
// blank lines are skipped), each at most max bytes; a longer one is
// passed as nil.
func scanLines(path string, max int, fn func(n int, line []byte) bool) error {
	return scanLinesFrom(path, max, 0, 1, func(n int, _ int64, line []byte) bool { return fn(n, line) })
}

// scanLinesFrom is scanLines from byte offset of the file, whose line is
// numbered first; fn also gets the offset at which the line ends (after
// its newline).
func scanLinesFrom(path string, max int, offset int64, first int, fn func(n int, end int64, line []byte) bool) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open batch input: %w", err)
	}
	defer fh.Close()
	if offset > 0 {
		if _, err := fh.Seek(offset, io.SeekStart); err != nil {
			return fmt.Errorf("seek batch input: %w", err)
		}
	}
	r := bufio.NewReaderSize(fh, 64<<10)
	var buf []byte
	end := offset
	for n := first; ; n++ {
		buf = buf[:0]
		long := false
		var err error
		for {
			var part []byte
			part, err = r.ReadSlice('\n')
			end += int64(len(part))
			if len(buf)+len(part) > max {
				long = true
			} else {
				buf = append(buf, part...)
			}
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read batch input: %w", err)
		}
		if long {
			if !fn(n, end, nil) {
				return nil
			}
		} else if len(bytes.TrimSpace(buf)) > 0 {
			if !fn(n, end, buf) {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// firstLineModel is the model the first request of the input file at
// path names ("" if it names none a batch could run).
func firstLineModel(path string, max int) string {
	model := ""
	_ = scanLines(path, max, func(_ int, raw []byte) bool {
		var l struct {
			Body struct {
				Model string `json:"model"`
			} `json:"body"`
		}
		if raw != nil && json.Unmarshal(raw, &l) == nil {
			model = l.Body.Model
		}
		return false
	})
	return model
}
