package main

import "github.com/nozzle-ai/nozzle/gateway"

// consoleExtensions mounts the web console on the gateway.
func (m *Main) consoleExtensions() []gateway.Extension { return nil }
