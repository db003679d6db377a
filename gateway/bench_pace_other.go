//go:build !linux

package gateway

import "time"

// pace returns time.Sleep where no finer sleep is at hand.
func pace() func(time.Duration) { return time.Sleep }
