package main

import (
	"os"
	"strings"
	"testing"
)

func TestLoad_AdapterCache(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"Default", nil, nil, 10240},
		{"Env", nil, map[string]string{"NOZZLE_ADAPTER_CACHE_MB": "512"}, 512},
		{"FlagOverEnv", []string{"--adapter-cache-mb", "0"}, map[string]string{"NOZZLE_ADAPTER_CACHE_MB": "512"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load("runtime", tt.args, env(tt.env), os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			if c.AdapterCacheMB != tt.want {
				t.Errorf("AdapterCacheMB=%d, want %d", c.AdapterCacheMB, tt.want)
			}
		})
	}
	_, _, err := Load("runtime", []string{"--adapter-cache-mb", "-1"}, env(nil), os.Stderr)
	if err == nil || !strings.Contains(err.Error(), "adapter_cache_mb -1: must not be negative") {
		t.Errorf("negative budget: %v", err)
	}
}
