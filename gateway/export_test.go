package gateway

// SplitToolCalls is splitToolCalls, for the external tests.
var SplitToolCalls = splitToolCalls
