package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// flyConfig is the part of fly.toml the deployment relies on.
type flyConfig struct {
	App         string `toml:"app"`
	KillSignal  string `toml:"kill_signal"`
	KillTimeout string `toml:"kill_timeout"`
	Build       struct{ Dockerfile string }
	Env         map[string]string `toml:"env"`
	Processes   map[string]string `toml:"processes"`
	HTTP        struct {
		Processes    []string `toml:"processes"`
		InternalPort int      `toml:"internal_port"`
		ForceHTTPS   bool     `toml:"force_https"`
		AutoStop     string   `toml:"auto_stop_machines"`
		AutoStart    bool     `toml:"auto_start_machines"`
		MinRunning   int      `toml:"min_machines_running"`
		Checks       []struct {
			Path string `toml:"path"`
		} `toml:"checks"`
	} `toml:"http_service"`
	Services []struct {
		Processes    []string `toml:"processes"`
		InternalPort int      `toml:"internal_port"`
		AutoStop     string   `toml:"auto_stop_machines"`
		AutoStart    bool     `toml:"auto_start_machines"`
		MinRunning   int      `toml:"min_machines_running"`
		Ports        []struct {
			Port     int      `toml:"port"`
			Handlers []string `toml:"handlers"`
		} `toml:"ports"`
		HTTPChecks []struct {
			Path string `toml:"path"`
		} `toml:"http_checks"`
	} `toml:"services"`
	Mounts []struct {
		Source      string   `toml:"source"`
		Destination string   `toml:"destination"`
		Processes   []string `toml:"processes"`
	} `toml:"mounts"`
	VM []struct {
		Processes []string `toml:"processes"`
		Size      string   `toml:"size"`
		Memory    string   `toml:"memory"`
	} `toml:"vm"`
}

// TestFlyToml checks the deployment against the binary: each process runs
// a real command with flags the binary accepts, the gateway is public with
// a volume for the ledger, the runtime is private on a GPU machine with the
// model on a volume and stops when idle.
func TestFlyToml(t *testing.T) {
	var fly flyConfig
	md, err := toml.DecodeFile(filepath.Join("..", "..", "fly.toml"), &fly)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		for _, k := range und {
			if !strings.HasPrefix(k.String(), "primary_region") && !strings.Contains(k.String(), "initial_size") &&
				!strings.Contains(k.String(), "method") && !strings.Contains(k.String(), "interval") &&
				!strings.Contains(k.String(), "timeout") && !strings.Contains(k.String(), "grace_period") &&
				!strings.Contains(k.String(), "protocol") {
				t.Errorf("fly.toml key %s is not checked by this test", k)
			}
		}
	}
	// A stop lets the drain of in-flight requests run its course.
	if d, err := time.ParseDuration(fly.KillTimeout); err != nil || d <= shutdownGrace || fly.KillSignal != "SIGTERM" {
		t.Errorf("kill_signal %q, kill_timeout %q: want SIGTERM and more than the %v drain", fly.KillSignal, fly.KillTimeout, shutdownGrace)
	}
	if _, err := os.Stat(filepath.Join("..", "..", fly.Build.Dockerfile)); err != nil {
		t.Errorf("build.dockerfile: %v", err)
	}

	if len(fly.Processes) != 2 {
		t.Fatalf("processes = %v, want gateway and runtime", fly.Processes)
	}
	configs := map[string]Config{}
	for group, cmdline := range fly.Processes {
		fields := strings.Fields(cmdline)
		if len(fields) < 2 || fields[0] != "/app/nozzle" {
			t.Fatalf("process %s: %q does not run /app/nozzle", group, cmdline)
		}
		if fields[1] != group {
			t.Errorf("process %s runs command %q", group, fields[1])
		}
		env := func(k string) (string, bool) { v, ok := fly.Env[k]; return v, ok }
		c, rest, err := Load(fields[1], fields[2:], env, os.Stderr)
		if err != nil {
			t.Fatalf("process %s: the binary refuses its flags: %v", group, err)
		}
		if len(rest) != 0 {
			t.Errorf("process %s: stray arguments %v", group, rest)
		}
		configs[group] = c
	}
	gw, rt := configs["gateway"], configs["runtime"]

	// The gateway: public HTTP on its --addr port, a volume at its --data.
	if got, want := fly.HTTP.Processes, []string{"gateway"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("http_service.processes = %v, want %v", got, want)
	}
	if !strings.HasSuffix(gw.Addr, ":"+itoa(fly.HTTP.InternalPort)) || !strings.HasPrefix(gw.Addr, "0.0.0.0:") {
		t.Errorf("gateway listens on %s, http_service.internal_port is %d", gw.Addr, fly.HTTP.InternalPort)
	}
	if fly.HTTP.AutoStop != "off" || fly.HTTP.MinRunning < 1 {
		t.Errorf("the gateway holds the ledger and must stay up: auto_stop=%q min=%d", fly.HTTP.AutoStop, fly.HTTP.MinRunning)
	}
	if len(fly.HTTP.Checks) == 0 || fly.HTTP.Checks[0].Path != "/healthz" {
		t.Errorf("gateway checks = %+v, want /healthz", fly.HTTP.Checks)
	}

	// The runtime: private service on its --addr port, stopped when idle.
	if len(fly.Services) != 1 {
		t.Fatalf("services = %d, want the runtime's private service", len(fly.Services))
	}
	svc := fly.Services[0]
	if strings.Join(svc.Processes, ",") != "runtime" {
		t.Errorf("services[0].processes = %v", svc.Processes)
	}
	if !strings.HasSuffix(rt.Addr, ":"+itoa(svc.InternalPort)) {
		t.Errorf("runtime listens on %s, service internal_port is %d", rt.Addr, svc.InternalPort)
	}
	if svc.AutoStop != "stop" || !svc.AutoStart || svc.MinRunning != 0 {
		t.Errorf("runtime must stop when idle and start on demand: %+v", svc)
	}
	for _, p := range svc.Ports {
		if len(p.Handlers) > 0 {
			t.Errorf("runtime port %d has handlers %v: the internal API must not be public TLS/HTTP", p.Port, p.Handlers)
		}
		found := false
		for _, u := range gw.Upstreams {
			if strings.HasSuffix(u, ":"+itoa(p.Port)) && strings.Contains(u, ".flycast") {
				found = true
			}
		}
		if !found {
			t.Errorf("gateway --upstreams %v does not reach the runtime's Flycast port %d", gw.Upstreams, p.Port)
		}
	}
	if len(svc.HTTPChecks) == 0 || svc.HTTPChecks[0].Path != "/readyz" {
		t.Errorf("runtime checks = %+v, want /readyz", svc.HTTPChecks)
	}
	if rt.Device != "cuda" {
		t.Errorf("runtime --device = %q, want cuda", rt.Device)
	}
	if !strings.Contains(rt.GatewayURL, "gateway.process.") || !strings.HasSuffix(rt.GatewayURL, ":"+itoa(fly.HTTP.InternalPort)) {
		t.Errorf("runtime --gateway-url = %q does not reach the gateway over the private network", rt.GatewayURL)
	}

	// Volumes: the gateway's data, the runtime's model.
	mounts := map[string]string{}
	for _, m := range fly.Mounts {
		if len(m.Processes) != 1 {
			t.Fatalf("mount %s serves %v, want one process group", m.Source, m.Processes)
		}
		mounts[m.Processes[0]] = m.Destination
	}
	if d := mounts["gateway"]; d == "" || !strings.HasPrefix(filepath.Clean(gw.Data), d) {
		t.Errorf("gateway --data %s is not on its volume %q", gw.Data, d)
	}
	if d := mounts["runtime"]; d == "" || !strings.HasPrefix(rt.Model, d) {
		t.Errorf("runtime --model %s is not on its volume %q", rt.Model, d)
	}

	// Machines: a small CPU gateway, a GPU runtime (A100 or L40S class).
	sizes := map[string]string{}
	for _, vm := range fly.VM {
		for _, p := range vm.Processes {
			sizes[p] = vm.Size
		}
	}
	if s := sizes["gateway"]; !strings.HasPrefix(s, "shared-cpu") && !strings.HasPrefix(s, "performance-") {
		t.Errorf("gateway vm size %q is not a CPU machine", s)
	}
	switch sizes["runtime"] {
	case "a100-40gb", "a100-80gb", "l40s":
	default:
		t.Errorf("runtime vm size %q is not an A100 or L40S GPU machine", sizes["runtime"])
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
