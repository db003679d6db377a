package nozzle

import (
	"context"
	"time"
)

// File is a file of the Files API kept for its tenant: a batch's input
// (purpose "batch", uploaded) or a batch's output or errors (purpose
// "batch_output", written by the batch runner). Its contents live on disk
// under the gateway's files folder, named by ID; the record says whose it
// is.
type File struct {
	ID       string    `json:"id"` // "file-…", unique
	TenantID string    `json:"tenant_id"`
	Filename string    `json:"filename"`
	Purpose  string    `json:"purpose"`
	Bytes    int64     `json:"bytes"`
	Created  time.Time `json:"created"`
}

// File purposes.
const (
	FilePurposeBatch       = "batch"
	FilePurposeBatchOutput = "batch_output"
)

// Batch statuses, as OpenAI's.
const (
	BatchValidating = "validating"
	BatchFailed     = "failed"
	BatchInProgress = "in_progress"
	BatchFinalizing = "finalizing"
	BatchCompleted  = "completed"
	BatchExpired    = "expired"
	BatchCancelling = "cancelling"
	BatchCancelled  = "cancelled"
)

// BatchDone reports whether status is final: the batch runs no more.
func BatchDone(status string) bool {
	switch status {
	case BatchFailed, BatchCompleted, BatchExpired, BatchCancelled:
		return true
	}
	return false
}

// BatchWindow is the one completion window a batch may ask for.
const BatchWindow = 24 * time.Hour

// Bounds of the Batch API, as OpenAI's.
const (
	MaxBatchRequests = 50000
	MaxBatchErrors   = 1000 // validation errors a failed batch lists
)

// BatchError is one error that failed a batch's validation: Line is the
// input file's line (1-based; 0 for the file as a whole).
type BatchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    int    `json:"line,omitempty"`
}

// BatchUsage totals the usage of a batch's completed requests.
type BatchUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	CachedTokens int64 `json:"cached_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// Batch is a Batch API batch of its tenant: the requests of an input file
// run by the gateway's batch runner as the tenant's requests (each one
// metered as a request of the key that created the batch), at a lower
// priority than interactive requests.
type Batch struct {
	ID               string            `json:"id"` // "batch_…", unique
	TenantID         string            `json:"tenant_id"`
	KeyID            string            `json:"key_id"` // the key that created it: its limits apply
	Endpoint         string            `json:"endpoint"`
	Model            string            `json:"model,omitempty"` // the model its first line names
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     string            `json:"output_file_id,omitempty"`
	ErrorFileID      string            `json:"error_file_id,omitempty"`
	Errors           []BatchError      `json:"errors,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`

	Created      time.Time `json:"created"`
	ExpiresAt    time.Time `json:"expires_at"`
	InProgressAt time.Time `json:"in_progress_at,omitzero"`
	FinalizingAt time.Time `json:"finalizing_at,omitzero"`
	CompletedAt  time.Time `json:"completed_at,omitzero"`
	FailedAt     time.Time `json:"failed_at,omitzero"`
	ExpiredAt    time.Time `json:"expired_at,omitzero"`
	CancellingAt time.Time `json:"cancelling_at,omitzero"`
	CancelledAt  time.Time `json:"cancelled_at,omitzero"`

	Total     int        `json:"total"`
	Completed int        `json:"completed"`
	Failed    int        `json:"failed"`
	Usage     BatchUsage `json:"usage"`

	// Progress is how far a batch that runs its lines has recorded them
	// (nil before it runs, and once it is done).
	Progress *BatchProgress `json:"progress,omitempty"`
}

// BatchProgress is the saved progress of a batch running its lines: every
// request of its input up to line Line (1-based), which ends at byte
// Offset of the input file, has its answer in the batch's partial output
// and error files, in their first OutBytes and ErrBytes bytes, and is
// counted in the batch's Completed, Failed and Usage. A batch resumed
// after a restart goes on from the line after Line.
type BatchProgress struct {
	Line     int   `json:"line"`
	Offset   int64 `json:"offset"`
	OutBytes int64 `json:"out_bytes"`
	ErrBytes int64 `json:"err_bytes"`
}

// FileQuery asks for a page of a tenant's files: Limit files (1 or more)
// after the file After (empty: from the start), newest first unless
// Ascending, of Purpose only when it is set.
type FileQuery struct {
	Purpose   string
	After     string
	Limit     int
	Ascending bool
}

// BatchStore keeps the tenants' files (their records: the contents are
// the gateway's) and batches. Another tenant's file or batch, and a
// deleted file, is ENOTFOUND exactly like an id that never existed
// (FileNotFound, BatchNotFound).
type BatchStore interface {
	// CreateFile records f (every field set).
	CreateFile(ctx context.Context, f *File) error
	// File returns the tenant's file id.
	File(ctx context.Context, tenantID, id string) (*File, error)
	// Files returns a page of the tenant's files and whether more follow.
	// An After the tenant has no file under is EINVALID (param "after").
	Files(ctx context.Context, tenantID string, q FileQuery) ([]*File, bool, error)
	// FileBytes is the sum of the sizes of the tenant's files.
	FileBytes(ctx context.Context, tenantID string) (int64, error)
	// DeleteFile deletes the tenant's file id's record.
	DeleteFile(ctx context.Context, tenantID, id string) error

	// CreateBatch records b.
	CreateBatch(ctx context.Context, b *Batch) error
	// Batch returns the tenant's batch id.
	Batch(ctx context.Context, tenantID, id string) (*Batch, error)
	// Batches returns a page of the tenant's batches, newest first, after
	// the batch After (empty: from the newest), and whether more follow.
	Batches(ctx context.Context, tenantID, after string, limit int) ([]*Batch, bool, error)
	// UpdateBatch replaces the stored batch b.ID of b.TenantID with b.
	UpdateBatch(ctx context.Context, b *Batch) error
	// OpenBatches returns every tenant's batches whose status is not
	// final (BatchDone), oldest first: those a starting gateway resumes.
	OpenBatches(ctx context.Context) ([]*Batch, error)
}

// FileNotFound is the error for a file id the tenant has none under.
func FileNotFound(id string) error {
	return Errorf(ENOTFOUND, "No such File object: %s", id).WithParam("id")
}

// BatchNotFound is the error for a batch id the tenant has none under.
func BatchNotFound(id string) error {
	return Errorf(ENOTFOUND, "No batch found with id '%s'.", id).WithParam("batch_id")
}
