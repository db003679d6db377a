// Package nozzle holds the domain of Nozzle: one warm base model serving many
// tenants' LoRA adapters, metered into a durable ledger, with the GPU's cost
// split fairly across the tenants that used it.
//
// The root package contains only domain types, the interfaces the parts meet
// through, the error model, and what more than one part must read alike: the
// API key format (key.go), a reasoning model's thoughts (reasoning.go), the
// query of a list page (page.go) and a report's CSV (report_csv.go). It
// imports the standard library only. The parts live in sub-packages
// (gateway, billing, runtime, web) and are wired together in cmd/nozzle.
package nozzle

// Version and Commit are set at build time with -ldflags.
var (
	Version = "dev"
	Commit  = ""
)

// BaseModelAlias is accepted in the "model" field of a request as a synonym
// for the base model's own id.
const BaseModelAlias = "base"
