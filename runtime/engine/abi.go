package engine

import "unsafe"

// Mirrors of csrc/include/nozzle_engine.h. abi_test.go parses the header
// and checks every constant and struct field against these.

// ABIVersion is the NZ_ABI_VERSION this package is written against.
const ABIVersion = 8

// Status codes (NZ_OK, NZ_ERR_*).
const (
	nzOK             = 0
	nzErrInvalid     = -1
	nzErrOOM         = -2
	nzErrUnsupported = -3
	nzErrDevice      = -4
	nzErrInternal    = -5
)

// Engine dtypes (NZ_F32, NZ_F16, NZ_BF16).
const (
	nzF32  = 0
	nzF16  = 1
	nzBF16 = 2
	nzQ8   = 3 // weights only: int8 rows with a scale each
)

// RoPE types (NZ_ROPE_*).
const (
	nzRopeDefault  = 0
	nzRopeLinear   = 1
	nzRopeLlama3   = 2
	nzRopeYarn     = 3
	nzRopeLongrope = 4
)

// Activations of the gated MLP (NZ_ACT_*).
const (
	nzActSilu     = 0
	nzActGeluTanh = 1
)

// nz_engine_info indices (NZ_INFO_*).
const (
	nzInfoKVBlockSize = 0
	nzInfoKVNumBlocks = 1
	nzInfoWeightBytes = 2
	nzInfoSlotBytes   = 3
	nzInfoKVBytes     = 4
	nzInfoMaxSlots    = 5
	nzInfoMaxRank     = 6
	nzInfoThreads     = 7
	nzInfoCount       = 8
)

// nz_struct_size arguments (NZ_STRUCT_*).
const (
	nzStructConfig = 0
	nzStructBatch  = 1
)

// nzTensorCount and nzModuleCount are NZ_T_COUNT and NZ_M_COUNT; the
// values themselves live in runtime/model (TensorKind, Module).
const (
	nzTensorCount = 23
	nzModuleCount = 7
)

// nzConfig mirrors struct nz_config field for field (every field 8 bytes).
type nzConfig struct {
	VocabSize               int64
	HiddenSize              int64
	IntermediateSize        int64
	NumLayers               int64
	NumHeads                int64
	NumKvHeads              int64
	HeadDim                 int64
	MaxPosition             int64
	RmsNormEps              float64
	RopeTheta               float64
	RopeType                int64
	RopeFactor              float64
	RopeLowFreqFactor       float64
	RopeHighFreqFactor      float64
	RopeOriginalMaxPosition int64
	RopeBetaFast            float64
	RopeBetaSlow            float64
	RopeAttentionFactor     float64
	RopeTruncate            int64
	SlidingWindow           int64
	SlidingWindowFromLayer  int64
	TieWordEmbeddings       int64
	WeightDtype             int64
	NormWeightOffset        float64
	EmbedScale              float64
	HiddenAct               int64
	AttnScale               float64
	AttnSoftcap             float64
	FinalSoftcap            float64
	RopeLocalTheta          float64
	LayerSliding            unsafe.Pointer
	RopeExtFactors          unsafe.Pointer
	RotaryDim               int64
	MaxSlots                int64
	MaxRank                 int64
	KvBlockSize             int64
	KvNumBlocks             int64
	KvMemoryBytes           int64
	MaxBatchTokens          int64
	MaxBatchSeqs            int64
	NumThreads              int64
	DeviceIndex             int64
	KvF32                   int64
	Reserved                [7]int64
}

// nzBatch mirrors struct nz_batch. Its pointers refer to Go slices pinned
// for the duration of nz_step.
type nzBatch struct {
	NSeqs         int64
	NTokens       int64
	Tokens        unsafe.Pointer
	SeqLen        unsafe.Pointer
	SeqPos        unsafe.Pointer
	SeqSlot       unsafe.Pointer
	SeqSample     unsafe.Pointer
	BlockTable    unsafe.Pointer
	MaxBlocks     int64
	Temperature   unsafe.Pointer
	TopP          unsafe.Pointer
	TopK          unsafe.Pointer
	Seed          unsafe.Pointer
	NTop          int64
	OutToken      unsafe.Pointer
	OutLogprob    unsafe.Pointer
	OutTopToken   unsafe.Pointer
	OutTopLogprob unsafe.Pointer
	OutLogits     unsafe.Pointer
	// scoring (prompt logprobs)
	ScoreTarget        unsafe.Pointer
	OutScoreLogprob    unsafe.Pointer
	OutScoreTopToken   unsafe.Pointer
	OutScoreTopLogprob unsafe.Pointer
	// logit adjustments
	BiasOff   unsafe.Pointer
	BiasToken unsafe.Pointer
	BiasValue unsafe.Pointer
	// token masks
	SeqAllow unsafe.Pointer
	Allow    unsafe.Pointer
	NAllow   int64
}

// MaxTop is the largest n_top a step may ask for.
const MaxTop = 20
