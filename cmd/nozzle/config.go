package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the one configuration of the nozzle binary. Every field is a
// key of the TOML config file, an environment variable NOZZLE_<KEY> and a
// flag --<key> (underscores become dashes). Precedence, lowest first:
// built-in defaults, the config file (--config or NOZZLE_CONFIG), the
// environment, flags.
type Config struct {
	Addr  string `key:"addr" help:"address to listen on (serve, gateway: HTTP API; runtime: internal API)"`
	Data  string `key:"data" help:"data folder: ledger, adapter store, demo model"`
	Model string `key:"model" help:"Hugging Face model folder to serve (default: the built-in demo model, generated into the data folder)"`
	// WaitForModel lets a deployment start its runtime before the model is
	// on its volume.
	WaitForModel bool   `key:"wait_for_model" help:"runtime: while the --model folder has no config.json, wait for it (checking every 5 s) instead of exiting; move a complete folder into place"`
	Device       string `key:"device" help:"engine device: auto, cpu or cuda"`
	EngineLib    string `key:"engine_lib" help:"path of the engine library (default: next to the binary, then ./build)"`

	AdminToken             Secret `key:"admin_token" help:"operator token for /admin (default: generated into DATA/admin-token)"`
	InternalToken          Secret `key:"internal_token" help:"shared token between gateway and runtimes (default: generated into DATA/internal-token)"`
	OperatorEmail          string `key:"operator_email" help:"console: email of the operator account created at start-up"`
	OperatorPassword       Secret `key:"operator_password" help:"console: password of that operator account (default: generated into DATA/operator-password)"`
	ConsoleInsecureCookies bool   `key:"console_insecure_cookies" help:"console: cookies without the Secure attribute, so that sign-in works over plain HTTP on an address other than localhost (a trusted network only; otherwise serve HTTPS)"`
	LogFormat              string `key:"log_format" help:"log format: auto (text on a terminal, else JSON), text or json"`
	LogLevel               string `key:"log_level" help:"log level: debug, info, warn or error"`
	HeapFloorMB            int    `key:"heap_floor_mb" help:"Go heap size below which the garbage collector does not run (fewer collections, a shorter latency tail; 0: Go's own pacing at GOGC=400; GOGC in the environment turns this off)"`

	// Runtime.
	RuntimeID      string  `key:"runtime_id" help:"name of this runtime in usage and cost reports, unique among the gateway's runtimes (default on Fly.io: fly-<machine id>)"`
	RatePerHour    float64 `key:"rate_per_hour" help:"cost of this runtime's machine in USD per hour (the GPU price)"`
	Weights        string  `key:"weights" help:"how the engine keeps the base model's weights: checkpoint (its dtype) or int8 (the CPU engine only: int8 with a scale per row, quantized at start-up; half a 16-bit checkpoint's memory and faster decoding on a model larger than the processor's cache, most at small batches, at a small loss of accuracy)"`
	Slots          int     `key:"slots" help:"adapter slots on the device"`
	MaxRank        int     `key:"max_rank" help:"largest LoRA rank accepted (slots are padded to it; at most 256)"`
	KVMemoryMB     int     `key:"kv_memory_mb" help:"memory for the KV cache in MiB"`
	MaxBatchTokens int     `key:"max_batch_tokens" help:"most tokens in one engine step (prefill chunks and decodes; 0: 512 on a GPU, on a CPU 64, or 16 for a model that fits in its cache)"`
	MaxBatchSeqs   int     `key:"max_batch_seqs" help:"most sequences in one engine step (0: 64 on a GPU, on a CPU 8, or 3 for a model that fits in its cache)"`
	Threads        int     `key:"threads" help:"CPU engine threads (0: every core)"`
	SpecTokens     int     `key:"speculative_tokens" help:"speculative decoding by prompt lookup: the most tokens drafted for a greedy request's step from its own prompt and output (n-gram match) and verified in that step; the output is unchanged, copy-heavy completions decode in fewer steps (-1: 4 on a CPU with a model bigger than its cache, where steps are bound by reading the weights, off elsewhere; 0: off)"`
	SpecMaxSeqs    int     `key:"speculative_max_seqs" help:"speculative decoding only drafts while a step decodes at most this many sequences (drafts take the step's spare tokens and rows of logits only)"`
	HostCacheMB    int     `key:"host_cache_mb" help:"host memory for adapters kept ready in MiB"`
	PrefixCache    bool    `key:"prefix_cache" help:"keep the KV blocks of prompts' whole leading blocks for later requests of the same tenant that begin the same way under the same adapter (shared system prompts, n choices, conversations): they skip that prefill"`
	PrefillWeight  float64 `key:"prefill_weight" help:"work weight of a prompt token when splitting a step's time"`
	DecodeWeight   float64 `key:"decode_weight" help:"work weight of a generated token when splitting a step's time"`
	GatewayURL     string  `key:"gateway_url" help:"runtime: the gateway's URL, where adapter files are fetched from"`
	AdapterCacheMB int     `key:"adapter_cache_mb" help:"runtime: disk space in MiB for adapter files fetched from the gateway; the least recently used not in use are deleted first (0: unlimited)"`

	// Gateway.
	Upstreams      []string      `key:"upstreams" help:"gateway: comma-separated URLs of remote runtimes"`
	UploadLimitMB  int           `key:"upload_limit_mb" help:"largest adapter upload in MiB"`
	TenantStoreMB  int           `key:"tenant_adapter_storage_mb" help:"gateway: most adapter storage in MiB one tenant may use (the sum of its adapters' sizes); an upload past it is refused (0: no cap)"`
	RequestTimeout time.Duration `key:"request_timeout" help:"longest a completion may run"`
	TenantSeqs     int           `key:"tenant_sequences" help:"gateway: most sequences (prompts × n of each request) one tenant may have running or queued at once; beyond, 429 (a request of more choices than that alone: 400) (0: no cap)"`
	FileLimitMB    int           `key:"file_upload_limit_mb" help:"gateway: largest file uploaded to the Files API (a batch's input) in MiB"`
	TenantFilesMB  int           `key:"tenant_file_storage_mb" help:"gateway: most MiB of files (batch inputs and outputs) one tenant may keep; an upload past it is refused, a batch whose output would pass it fails (0: no cap)"`
	BatchLines     int           `key:"batch_concurrency" help:"gateway: how many lines of batches (the Batch API) run at once, all batches together; they run behind interactive requests"`
	StreamCkpt     time.Duration `key:"stream_checkpoint" help:"gateway: how often a running stream's usage so far is written to the ledger, so that a crash of the gateway leaves at most that long of a stream's tokens uncharged (0: never; the whole stream is then uncharged)"`

	// Billing.
	IdlePolicy           string  `key:"idle_policy" help:"who carries idle GPU time: prorata or operator"`
	PricePrompt          float64 `key:"price_prompt" help:"default price in USD per million prompt tokens"`
	PriceCompletion      float64 `key:"price_completion" help:"default price in USD per million completion tokens"`
	PriceCachedPrompt    float64 `key:"price_cached_prompt" help:"default price in USD per million cached prompt tokens (those the prefix cache held), at most price_prompt (left unset: half of price_prompt)"`
	PriceBatchDiscount   float64 `key:"price_batch_discount_percent" help:"default price's discount in percent (0 to 100) on requests the Batch API runs"`
	DedicatedRatePerHour float64 `key:"dedicated_rate_per_hour" help:"hourly price of a dedicated GPU, for the saving shown to tenants (0: the rate of the runtimes that served each adapter)"`
	ResponseRetention    int     `key:"response_retention_days" help:"days a stored response of the Responses API is kept (retrieved, listed, continued with previous_response_id); older ones are deleted hourly (0: kept until deleted)"`
	TenantResponseMB     int     `key:"tenant_response_storage_mb" help:"most MiB of stored responses (the Responses API's) one tenant may hold; at it, new responses are answered with store false and not kept (0: no cap)"`
	TenantConvMB         int     `key:"tenant_conversation_storage_mb" help:"most MiB of conversation items (the Conversations API's) one tenant may hold; at it, adding items and responses naming a conversation are refused until some are deleted (0: no cap)"`
	StripeKey            Secret  `key:"stripe_key" help:"Stripe secret key; enables metered billing"`
	StripeAPIURL         string  `key:"stripe_api_url" help:"Stripe API URL (for stripe-mock)"`
	StripeMeterPrompt    string  `key:"stripe_meter_prompt" help:"Stripe meter event name for prompt tokens (those the prefix cache did not hold)"`
	StripeMeterComp      string  `key:"stripe_meter_completion" help:"Stripe meter event name for completion tokens"`
	StripeMeterBatchP    string  `key:"stripe_meter_batch_prompt" help:"Stripe meter event name for prompt tokens (not cached) of requests the Batch API ran"`
	StripeMeterBatchC    string  `key:"stripe_meter_batch_completion" help:"Stripe meter event name for completion tokens of requests the Batch API ran"`
	StripeMeterCachedP   string  `key:"stripe_meter_cached_prompt" help:"Stripe meter event name for cached prompt tokens (the prompt meters count the others)"`
	StripeMeterBatchK    string  `key:"stripe_meter_batch_cached_prompt" help:"Stripe meter event name for cached prompt tokens of requests the Batch API ran"`
}

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{
		Addr:               "127.0.0.1:8080",
		Data:               "./data",
		Device:             "auto",
		Weights:            "checkpoint",
		LogFormat:          "auto",
		LogLevel:           "info",
		HeapFloorMB:        256,
		PrefixCache:        true,
		RuntimeID:          "local",
		RatePerHour:        2.0,
		Slots:              8,
		MaxRank:            64,
		KVMemoryMB:         512,
		HostCacheMB:        1024,
		AdapterCacheMB:     10240,
		PrefillWeight:      1,
		DecodeWeight:       2,
		UploadLimitMB:      2048,
		TenantStoreMB:      20480,
		RequestTimeout:     10 * time.Minute,
		TenantSeqs:         64,
		FileLimitMB:        200,
		TenantFilesMB:      10240,
		BatchLines:         4,
		StreamCkpt:         time.Second,
		IdlePolicy:         "prorata",
		PricePrompt:        0.10,
		PriceCompletion:    0.30,
		PriceCachedPrompt:  0.05, // half of PricePrompt; see Load
		PriceBatchDiscount: 50,
		ResponseRetention:  30,
		TenantResponseMB:   1024,
		TenantConvMB:       1024,
		StripeMeterPrompt:  "nozzle_prompt_tokens",
		StripeMeterComp:    "nozzle_completion_tokens",
		StripeMeterBatchP:  "nozzle_batch_prompt_tokens",
		StripeMeterBatchC:  "nozzle_batch_completion_tokens",
		StripeMeterCachedP: "nozzle_cached_prompt_tokens",
		StripeMeterBatchK:  "nozzle_batch_cached_prompt_tokens",
		OperatorEmail:      defaultOperatorEmail,
		SpecMaxSeqs:        2,
		SpecTokens:         -1,
	}
}

// Validate reports the first unacceptable value, naming its key.
func (c *Config) Validate() error {
	switch c.Device {
	case "auto", "cpu", "cuda":
	default:
		return fmt.Errorf("device %q: want auto, cpu or cuda", c.Device)
	}
	switch c.Weights {
	case "checkpoint", "int8":
	default:
		return fmt.Errorf("weights %q: want checkpoint or int8", c.Weights)
	}
	if c.Weights == "int8" && c.Device == "cuda" {
		return errors.New("weights int8 with device cuda: the CUDA engine keeps the checkpoint's 16-bit weights; int8 is the CPU engine's")
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return fmt.Errorf("log_format %q: want auto, text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.IdlePolicy {
	case "prorata", "operator":
	default:
		return fmt.Errorf("idle_policy %q: want prorata or operator", c.IdlePolicy)
	}
	if c.Addr == "" {
		return errors.New("addr is empty")
	}
	if c.Data == "" {
		return errors.New("data is empty")
	}
	if c.Slots < 1 || c.Slots > 1024 {
		return fmt.Errorf("slots %d: want 1 to 1024", c.Slots)
	}
	if c.MaxRank < 1 || c.MaxRank > 256 {
		return fmt.Errorf("max_rank %d: want 1 to 256", c.MaxRank)
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"rate_per_hour", c.RatePerHour}, {"price_prompt", c.PricePrompt}, {"price_completion", c.PriceCompletion}, {"dedicated_rate_per_hour", c.DedicatedRatePerHour}} {
		// NaN and infinities pass a plain "< 0" test; as a rate they
		// left every capacity interval and usage event unrecordable.
		if !(f.v >= 0) || math.IsInf(f.v, 0) {
			return fmt.Errorf("%s %g: must be a finite number, not negative", f.key, f.v)
		}
	}
	if !(c.PriceCachedPrompt >= 0 && c.PriceCachedPrompt <= c.PricePrompt) {
		return fmt.Errorf("price_cached_prompt %g: want a number from 0 to price_prompt (%g): a cached prompt token costs no more than another", c.PriceCachedPrompt, c.PricePrompt)
	}
	if !(c.PriceBatchDiscount >= 0 && c.PriceBatchDiscount <= 100) {
		return fmt.Errorf("price_batch_discount_percent %g: want a number from 0 to 100", c.PriceBatchDiscount)
	}
	if !(c.PrefillWeight > 0) || !(c.DecodeWeight > 0) || math.IsInf(c.PrefillWeight, 0) || math.IsInf(c.DecodeWeight, 0) {
		return errors.New("prefill_weight and decode_weight must be positive finite numbers")
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"kv_memory_mb", c.KVMemoryMB}, {"host_cache_mb", c.HostCacheMB}, {"upload_limit_mb", c.UploadLimitMB}, {"file_upload_limit_mb", c.FileLimitMB}, {"batch_concurrency", c.BatchLines}} {
		if f.v < 1 {
			return fmt.Errorf("%s %d: must be positive", f.key, f.v)
		}
	}
	if c.SpecTokens < -1 || c.SpecTokens > 16 {
		return fmt.Errorf("speculative_tokens %d: must be -1 (auto) or in 0..16 (0: off)", c.SpecTokens)
	}
	if c.SpecMaxSeqs < 1 {
		return fmt.Errorf("speculative_max_seqs %d: must be positive", c.SpecMaxSeqs)
	}
	if c.MaxBatchTokens < 0 || c.MaxBatchSeqs < 0 {
		return errors.New("max_batch_tokens and max_batch_seqs must not be negative (0: sized for the device and model)")
	}
	if c.HeapFloorMB < 0 {
		return fmt.Errorf("heap_floor_mb %d: must not be negative (0: no floor)", c.HeapFloorMB)
	}
	if c.AdapterCacheMB < 0 {
		return fmt.Errorf("adapter_cache_mb %d: must not be negative (0: unlimited)", c.AdapterCacheMB)
	}
	if c.Threads < 0 {
		return fmt.Errorf("threads %d: must not be negative", c.Threads)
	}
	if c.TenantStoreMB < 0 {
		return fmt.Errorf("tenant_adapter_storage_mb %d: must be 0 (no cap) or more", c.TenantStoreMB)
	}
	if c.TenantFilesMB < 0 {
		return fmt.Errorf("tenant_file_storage_mb %d: must be 0 (no cap) or more", c.TenantFilesMB)
	}
	if c.TenantSeqs < 0 {
		return fmt.Errorf("tenant_sequences %d: must be 0 (no cap) or more", c.TenantSeqs)
	}
	if c.ResponseRetention < 0 || c.ResponseRetention > 36500 {
		return fmt.Errorf("response_retention_days %d: must be 0 (kept until deleted) to 36500", c.ResponseRetention)
	}
	if c.TenantResponseMB < 0 {
		return fmt.Errorf("tenant_response_storage_mb %d: must be 0 (no cap) or more", c.TenantResponseMB)
	}
	if c.TenantConvMB < 0 {
		return fmt.Errorf("tenant_conversation_storage_mb %d: must be 0 (no cap) or more", c.TenantConvMB)
	}
	if c.RequestTimeout <= 0 {
		return fmt.Errorf("request_timeout %v: must be positive", c.RequestTimeout)
	}
	if c.StreamCkpt < 0 {
		return fmt.Errorf("stream_checkpoint %v: must not be negative (0: never)", c.StreamCkpt)
	}
	return nil
}

// Secret is a string that never shows itself in logs or config dumps.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() any { return s.String() }

// field is one configuration key bound to a Config field.
type field struct {
	key, help string
	v         reflect.Value
}

func (c *Config) fields() []field {
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	out := make([]field, 0, rt.NumField())
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		key := f.Tag.Get("key")
		if key == "" {
			continue
		}
		out = append(out, field{key: key, help: f.Tag.Get("help"), v: rv.Field(i)})
	}
	return out
}

// FlagName is the flag of a key: "max_rank" → "max-rank".
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// EnvName is the environment variable of a key: "max_rank" → "NOZZLE_MAX_RANK".
func EnvName(key string) string { return "NOZZLE_" + strings.ToUpper(key) }

// set parses s into the field.
func (f field) set(s string) error {
	switch p := f.v.Addr().Interface().(type) {
	case *string:
		*p = s
	case *Secret:
		*p = Secret(s)
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: %q is not a whole number", f.key, s)
		}
		*p = n
	case *float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.key, s)
		}
		*p = x
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", f.key, s)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration like 90s or 10m", f.key, s)
		}
		*p = d
	case *[]string:
		*p = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	default:
		return fmt.Errorf("%s: unsupported type %T", f.key, p)
	}
	return nil
}

// text formats the field's value as a flag takes it.
func (f field) text() string {
	switch x := f.v.Interface().(type) {
	case string:
		return x
	case Secret:
		return string(x)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Duration:
		return x.String()
	case []string:
		return strings.Join(x, ",")
	}
	return fmt.Sprint(f.v.Interface())
}

// flagValue is a config key as a flag: its help shows the default, and a
// bool key may be given bare (--prefix-cache for --prefix-cache=true).
type flagValue struct {
	f      field
	record func(string) error
}

// String is the value for the help's "(default …)"; zero values show no
// default, as the flag package's own flags do.
func (v *flagValue) String() string {
	if v == nil || !v.f.v.IsValid() || v.f.v.IsZero() {
		return ""
	}
	return v.f.text()
}

func (v *flagValue) Set(s string) error { return v.record(s) }

func (v *flagValue) IsBoolFlag() bool {
	return v != nil && v.f.v.IsValid() && v.f.v.Kind() == reflect.Bool
}

// setValue sets the field from a decoded TOML value.
func (f field) setValue(v any) error {
	switch x := v.(type) {
	case string:
		return f.set(x)
	case int64:
		switch f.v.Kind() {
		case reflect.Int, reflect.Float64:
			return f.set(strconv.FormatInt(x, 10))
		}
	case float64:
		if f.v.Kind() == reflect.Float64 {
			f.v.SetFloat(x)
			return nil
		}
	case bool:
		if f.v.Kind() == reflect.Bool {
			f.v.SetBool(x)
			return nil
		}
	case []any:
		if f.v.Type() == reflect.TypeOf([]string(nil)) {
			parts := make([]string, 0, len(x))
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("%s: want a list of strings", f.key)
				}
				parts = append(parts, s)
			}
			return f.set(strings.Join(parts, ","))
		}
	}
	return fmt.Errorf("%s: a %T value does not fit here", f.key, v)
}

// ReadConfigFile applies a TOML config file to c. Unknown keys are errors.
func (c *Config) ReadConfigFile(path string) error {
	_, err := c.readConfigFile(path)
	return err
}

// readConfigFile is ReadConfigFile, returning the keys the file set too.
func (c *Config) readConfigFile(path string) (map[string]any, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if _, err := toml.Decode(string(buf), &m); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	byKey := map[string]field{}
	for _, f := range c.fields() {
		byKey[f.key] = f
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("config file %s: unknown key %q", path, k)
		}
		if err := f.setValue(m[k]); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	return m, nil
}

// ApplyEnv applies NOZZLE_* environment variables found by lookup.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	for _, f := range c.fields() {
		if s, ok := lookup(EnvName(f.key)); ok {
			if err := f.set(s); err != nil {
				return fmt.Errorf("environment %s: %w", EnvName(f.key), err)
			}
		}
	}
	return nil
}

// Load builds the configuration of a command from defaults, the config
// file, the environment and args (flags), in that order of precedence, and
// returns the remaining positional arguments.
func Load(name string, args []string, lookup func(string) (string, bool), stderr io.Writer) (Config, []string, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("nozzle "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "TOML config file (env NOZZLE_CONFIG)")
	// Flags are checked against a scratch config while parsing, then
	// replayed on top of file and environment so that they win.
	type setting struct{ key, value string }
	var flagged []setting
	scratch := DefaultConfig()
	for _, f := range scratch.fields() {
		f := f
		fs.Var(&flagValue{f: f, record: func(s string) error {
			flagged = append(flagged, setting{f.key, s})
			return f.set(s)
		}}, FlagName(f.key), f.help+" (env "+EnvName(f.key)+")")
	}
	fs.Usage = func() {} // a bad flag is one line of error, not a page of usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: nozzle %s [flags]\n\nFlags (each also a config-file key and an environment variable NOZZLE_<KEY>):\n", name)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return c, nil, err
	}
	if *configPath == "" {
		if p, ok := lookup("NOZZLE_CONFIG"); ok {
			*configPath = p
		}
	}
	var fileKeys map[string]any
	if *configPath != "" {
		var err error
		if fileKeys, err = c.readConfigFile(*configPath); err != nil {
			return c, nil, err
		}
	}
	if err := c.ApplyEnv(lookup); err != nil {
		return c, nil, err
	}
	byKey := map[string]field{}
	for _, f := range c.fields() {
		byKey[f.key] = f
	}
	for _, s := range flagged {
		if err := byKey[s.key].set(s.value); err != nil {
			return c, nil, err
		}
	}
	// price_cached_prompt left unset follows price_prompt at half of it
	// (the defaults' ratio), so that a deployment that raises its prompt
	// price keeps a cached price below it rather than one left behind.
	set := func(key string) bool {
		_, inFile := fileKeys[key]
		_, inEnv := lookup(EnvName(key))
		return inFile || inEnv || slices.ContainsFunc(flagged, func(s setting) bool { return s.key == key })
	}
	if !set("price_cached_prompt") {
		c.PriceCachedPrompt = c.PricePrompt / 2
	}
	// On Fly.io every machine of a process group runs the same command:
	// left unset, a runtime's id is its machine's, so that machines added
	// to the group are told apart in the capacity records.
	if m, ok := lookup("FLY_MACHINE_ID"); ok && m != "" && c.RuntimeID == DefaultConfig().RuntimeID {
		c.RuntimeID = "fly-" + m
	}
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	return c, fs.Args(), nil
}
