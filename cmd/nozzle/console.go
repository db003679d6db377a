package main

import "github.com/nozzle-ai/nozzle/gateway"

// consoleExtensions mounts the web console and the ledger maintenance
// routes on the gateway.
func (m *Main) consoleExtensions() []gateway.Extension {
	return []gateway.Extension{gateway.Maintenance(ledgerMaintainer{m.Ledger})}
}
