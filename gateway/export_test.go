package gateway

import "github.com/nozzle-ai/nozzle"

// SplitToolCalls is splitToolCalls, for the external tests.
var SplitToolCalls = splitToolCalls

// FormatUSD is formatUSD (how the console shows amounts), for the
// external tests.
var FormatUSD = formatUSD

// FormatSeconds is how the console shows seconds, for the external tests.
var FormatSeconds = nozzle.FormatSeconds

// FormatPercent is how the console shows percentages, for the external tests.
var FormatPercent = nozzle.FormatPercent

// OldFingerprint is the request fingerprint of earlier releases.
var OldFingerprint = oldFingerprint

// FormatInt is formatInt (how the console shows counts), for the
// external tests.
var FormatInt = formatInt

// SetStoredPartLimit makes c's gateway keep no stored response whose
// object or input items are larger than n bytes (4 MiB otherwise), so
// that tests need not answer 4 MiB to pass the limit.
func SetStoredPartLimit(c *Config, n int) { c.storedPart = n }
