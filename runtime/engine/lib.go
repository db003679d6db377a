// Package engine binds the Nozzle engine library (libnozzle_cpu.so,
// libnozzle_cuda.so; C ABI in csrc/include/nozzle_engine.h) through purego,
// so the Go binary builds with CGO_ENABLED=0 and loads a backend at run time.
//
// A Library is a loaded backend. An Engine is one model instance in it:
// base weights copied from a mapped checkpoint, a fixed number of adapter
// slots, a paged KV pool owned by the engine and addressed through block
// tables the caller manages, and Step, which runs one mixed batch of
// prefill chunks and decode tokens of many sequences with different
// adapters in ONE call. An Engine is not safe for concurrent use: one
// goroutine owns it.
package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Errors of the engine library, by status code. Errors returned by this
// package wrap one of them (use errors.Is) together with the call's name
// and the library's message.
var (
	// ErrInvalid: a bad argument, shape, dtype or call order.
	ErrInvalid = errors.New("invalid argument")
	// ErrOutOfMemory: host or device memory exhausted.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrUnsupported: a feature, dtype or processor the backend lacks.
	ErrUnsupported = errors.New("unsupported")
	// ErrDevice: a CUDA or device failure.
	ErrDevice = errors.New("device failure")
	// ErrInternal: an engine invariant did not hold (a bug).
	ErrInternal = errors.New("internal engine error")
)

// Error is a failed engine call.
type Error struct {
	// Call is the C function, e.g. "nz_step".
	Call string
	// Status is the NZ_ERR_* code.
	Status int32
	// Message is nz_last_error's text.
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %v", e.Call, e.Unwrap())
	}
	return fmt.Sprintf("%s: %v: %s", e.Call, e.Unwrap(), e.Message)
}

// Unwrap returns the sentinel for the status.
func (e *Error) Unwrap() error {
	switch e.Status {
	case nzErrInvalid:
		return ErrInvalid
	case nzErrOOM:
		return ErrOutOfMemory
	case nzErrUnsupported:
		return ErrUnsupported
	case nzErrDevice:
		return ErrDevice
	}
	return ErrInternal
}

// DefaultLibrary is the CPU backend's file name.
const DefaultLibrary = "libnozzle_cpu.so"

// Library is a loaded engine library. It stays loaded for the life of the
// process (unloading code whose worker threads may still run is unsafe).
type Library struct {
	path    string
	handle  uintptr
	backend string

	abiVersion      func() int32
	structSize      func(which int32) int64
	lastError       func() string
	backendName     func(buf *byte, n int64) int32
	engineCreate    func(cfg *nzConfig, out *uintptr) int32
	engineSetTensor func(e uintptr, kind, layer, dtype int32, data unsafe.Pointer, shape *int64, ndim int32) int32
	engineFinalize  func(e uintptr) int32
	engineInfo      func(e uintptr, out *int64, n int32) int32
	engineDestroy   func(e uintptr)
	adapterLoad     func(e uintptr, slot, n int32, layer, module, rank *int32, scale *float32, aDtype *int32, a *unsafe.Pointer, bDtype *int32, b *unsafe.Pointer) int32
	adapterClear    func(e uintptr, slot int32) int32
	benchBandwidth  func(bytes int64, iters, threads int32, out *float64) int32
	// nz_step is called through SyscallN so a step allocates nothing.
	stepFn uintptr
}

// Find locates an engine library file by name: next to the executable (or
// in a build/ folder beside its folder, as in bin/nozzle and
// build/libnozzle_cpu.so), then ./build/, then build/ in each parent of the
// working directory.
func Find(name string) (string, error) {
	var tried []string
	try := func(p string) bool {
		tried = append(tried, p)
		st, err := os.Stat(p)
		return err == nil && !st.IsDir()
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		for _, p := range []string{filepath.Join(d, name), filepath.Join(d, "build", name), filepath.Join(d, "..", "build", name)} {
			if try(p) {
				return p, nil
			}
		}
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if p := filepath.Join(d, "build", name); try(p) {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("engine library %s not found (looked next to the executable and in build/ folders from the working directory up; build it with make, or give its path)", name)
}

// Open loads an engine library. An empty path finds DefaultLibrary (see
// Find). Every symbol of the ABI is resolved, the ABI version and the
// struct sizes are checked; a missing symbol or a mismatch is an error.
func Open(path string) (*Library, error) {
	if path == "" {
		p, err := Find(DefaultLibrary)
		if err != nil {
			return nil, err
		}
		path = p
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("engine library %s: %w", path, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("load engine library %s: %w", path, err)
	}
	l := &Library{path: path, handle: h}
	syms := []struct {
		name string
		fn   any
	}{
		{"nz_abi_version", &l.abiVersion},
		{"nz_struct_size", &l.structSize},
		{"nz_last_error", &l.lastError},
		{"nz_backend_name", &l.backendName},
		{"nz_engine_create", &l.engineCreate},
		{"nz_engine_set_tensor", &l.engineSetTensor},
		{"nz_engine_finalize", &l.engineFinalize},
		{"nz_engine_info", &l.engineInfo},
		{"nz_engine_destroy", &l.engineDestroy},
		{"nz_adapter_load", &l.adapterLoad},
		{"nz_adapter_clear", &l.adapterClear},
		{"nz_step", nil},
		{"nz_bench_read_bandwidth", &l.benchBandwidth},
	}
	for _, s := range syms {
		addr, err := purego.Dlsym(h, s.name)
		if err != nil || addr == 0 {
			return nil, fmt.Errorf("engine library %s lacks the symbol %s", path, s.name)
		}
		if s.fn == nil {
			l.stepFn = addr
			continue
		}
		purego.RegisterFunc(s.fn, addr)
	}
	if v := l.abiVersion(); v != ABIVersion {
		return nil, fmt.Errorf("engine library %s has ABI version %d, but this build of Nozzle needs version %d; rebuild the library", path, v, ABIVersion)
	}
	for _, s := range []struct {
		which int32
		name  string
		want  uintptr
	}{{nzStructConfig, "nz_config", unsafe.Sizeof(nzConfig{})}, {nzStructBatch, "nz_batch", unsafe.Sizeof(nzBatch{})}} {
		if got := l.structSize(s.which); got != int64(s.want) {
			return nil, fmt.Errorf("engine library %s: struct %s is %d bytes, Go expects %d; rebuild the library", path, s.name, got, s.want)
		}
	}
	buf := make([]byte, 256)
	if err := l.check("nz_backend_name", func() int32 { return l.backendName(&buf[0], int64(len(buf))) }); err != nil {
		return nil, err
	}
	for i, c := range buf {
		if c == 0 {
			buf = buf[:i]
			break
		}
	}
	l.backend = string(buf)
	return l, nil
}

// Path returns the file the library was loaded from.
func (l *Library) Path() string { return l.path }

// Backend describes the backend, e.g. "cpu avx512-bf16, 2 cores" (the
// machine's cores; the engine runs Options.Threads of them).
func (l *Library) Backend() string { return l.backend }

// check runs a call on a locked OS thread so nz_last_error (thread-local)
// reads the failed call's message.
func (l *Library) check(name string, call func() int32) error {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	if st := call(); st != nzOK {
		return &Error{Call: name, Status: st, Message: l.lastError()}
	}
	return nil
}

// ReadBandwidth measures the memory read bandwidth the backend's own
// threads reach over a buffer of the given size, read iters times (threads
// 0 = every core). Benchmarks divide the engine's weight-read rate by it.
func (l *Library) ReadBandwidth(bytes int64, iters, threads int) (float64, error) {
	var bw float64
	err := l.check("nz_bench_read_bandwidth", func() int32 {
		return l.benchBandwidth(bytes, int32(iters), int32(threads), &bw)
	})
	return bw, err
}
