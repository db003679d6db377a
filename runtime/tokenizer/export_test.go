package tokenizer

// SetUseScanners switches the hand-written split-pattern scanners on or off
// for tokenizers built afterwards (off: regexp2 runs every pattern).
func SetUseScanners(on bool) { useScanners = on }

// SetSpaceSplit switches cutting SentencePiece-style words before "▁" on or
// off for tokenizers built afterwards.
func SetSpaceSplit(on bool) { useSpaceSplit = on }
