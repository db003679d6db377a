package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The README's examples are run by TestREADME_Examples. A block that
// cannot run in a test carries a marker on the line before its fence:
//
//	<!-- readme-test: skip (why) -->       not run
//	<!-- readme-test: stop-demo (why) -->  run after the demo server has
//	                                       stopped (the block starts its own
//	                                       servers on the demo's port)
var readmeMarker = regexp.MustCompile(`^<!-- readme-test: (skip|stop-demo) \((.+)\) -->$`)

// readmeBlock is one fenced code block of the README.
type readmeBlock struct {
	line         int    // README line of its first line of code
	lang         string // the fence's info string: sh, python, js, ...
	code         string
	mark, reason string // its marker, if any
}

// readmeBlocks returns the README's fenced blocks in order, with their
// markers; a marker that is malformed or stands anywhere but directly
// before a fence is an error, so that none is silently ignored.
func readmeBlocks(text string) ([]readmeBlock, error) {
	var (
		blocks []readmeBlock
		cur    *readmeBlock
		code   strings.Builder
		mark   []string // the marker on the previous line
	)
	for i, l := range strings.Split(text, "\n") {
		n := i + 1
		if cur != nil {
			if l == "```" {
				cur.code = code.String()
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			code.WriteString(l + "\n")
			continue
		}
		if lang, ok := strings.CutPrefix(l, "```"); ok {
			cur = &readmeBlock{line: n + 1, lang: strings.TrimSpace(lang)}
			if mark != nil {
				cur.mark, cur.reason = mark[1], mark[2]
			}
			code.Reset()
			mark = nil
			continue
		}
		if mark != nil {
			return nil, fmt.Errorf("README.md:%d: a readme-test marker must stand on the line just before a code block", n-1)
		}
		if strings.Contains(l, "readme-test:") {
			if mark = readmeMarker.FindStringSubmatch(l); mark == nil {
				return nil, fmt.Errorf("README.md:%d: malformed marker %q (want <!-- readme-test: skip (why) --> or stop-demo)", n, l)
			}
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("README.md:%d: code block not closed", cur.line-1)
	}
	return blocks, nil
}

func TestREADME_Blocks(t *testing.T) {
	b, err := readmeBlocks("text\n<!-- readme-test: skip (needs a GPU) -->\n```sh\nnvidia-smi\n```\n\n```python\nprint(1)\n\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeBlock{{line: 4, lang: "sh", code: "nvidia-smi\n", mark: "skip", reason: "needs a GPU"}, {line: 8, lang: "python", code: "print(1)\n\n"}}
	if fmt.Sprint(b) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", b, want)
	}
	for _, bad := range []string{
		"<!-- readme-test: skip (why) -->\n\n```sh\nls\n```\n", // not just before the fence
		"<!-- readme-test: skip -->\n```sh\nls\n```\n",         // no reason
		"<!-- readme-test: ignore (why) -->\n```sh\nls\n```\n",
		"```sh\nls\n",
	} {
		if _, err := readmeBlocks(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestREADME_Examples runs the README's examples, in order, against a real
// demo server (`nozzle serve` in a fresh data folder, as `make run`
// starts it), so that the README cannot drift from what Nozzle does.
//
// Every ```sh block runs with bash, each in its own process under `set
// -euo pipefail`, in a work folder laid out like the repository's:
// data/ is the server's data folder and bin/nozzle is this test binary
// acting as nozzle, so the README's data/... and ./bin/nozzle paths stand
// as written. Its variables (KEY=..., export ...) carry into the blocks
// after it, as in one shell. Background jobs a block starts (&) are
// stopped when it ends. curl is a function that adds --fail-with-body -sS
// (--fail where the block gives -f): an HTTP error fails the block; each
// response is kept, a successful one declared JSON must parse, and the
// first chat completion must answer a choice.
// ```python and ```js blocks run when python3 or node has the openai
// package, and are reported skipped otherwise. A block the test cannot
// run carries a marker (see readmeMarker).
//
// The rewrites, in every block run, and nothing else:
//   - 127.0.0.1:8080 → the demo server's address (a free loopback port);
//   - 127.0.0.1:8081 → another free loopback port (the split deployment's
//     runtime);
//   - /tmp/ → a folder of the test's (the examples' scratch files).
//
// and in the environment NOZZLE_ADDR is the demo server's address, as the
// README says to set it when port 8080 is taken, and NOZZLE_ENGINE_LIB
// the engine library; the user's other NOZZLE_ variables are removed.
func TestREADME_Examples(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and runs the README's examples")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README's examples need %s, which is not installed: %v", tool, err)
		}
	}
	text, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := readmeBlocks(string(text))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lib := engineLib(t)

	work := t.TempDir()
	scratch := filepath.Join(work, "tmp")
	state := filepath.Join(work, ".readme-test")
	for _, d := range []string{filepath.Join(work, "bin"), scratch, filepath.Join(state, "responses")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// bin/nozzle: this test binary, which TestMain makes the nozzle binary.
	wrapper := fmt.Sprintf("#!/bin/sh\nNOZZLE_TEST_MAIN=1 exec %s \"$@\"\n", shellQuote(exe))
	if err := os.WriteFile(filepath.Join(work, "bin", "nozzle"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "vars.sh"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	addr, rtAddr := freeAddr(t), freeAddr(t)
	rewrite := strings.NewReplacer("127.0.0.1:8080", addr, "127.0.0.1:8081", rtAddr, "/tmp/", scratch+"/")
	env := []string{"NOZZLE_ADDR=" + addr, "NOZZLE_ENGINE_LIB=" + lib, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "NOZZLE_") && !strings.EqualFold(k, "no_proxy") {
			env = append(env, kv)
		}
	}

	// The JS example finds the SDK the SDK test installs, where NODE_PATH
	// names no other.
	if sdk, _ := filepath.Abs(filepath.Join("..", "..", "gateway", "testdata", "sdk", "node_modules")); os.Getenv("NODE_PATH") == "" {
		if _, err := os.Stat(filepath.Join(sdk, "openai")); err == nil {
			env = append(env, "NODE_PATH="+sdk)
		}
	}

	demo := startDemo(t, exe, work, addr, lib, env)

	firstChat := true
	failed := false
	for _, b := range blocks {
		name := fmt.Sprintf("README.md:%d", b.line)
		var interp string
		switch b.lang {
		case "sh":
		case "python":
			interp = "python3"
		case "js":
			interp = "node"
		default:
			continue // not an example: a listing, a table, a config file
		}
		code := rewrite.Replace(b.code)
		t.Run(name, func(t *testing.T) {
			switch {
			case failed:
				t.Skip("not run: an earlier block failed")
			case b.mark == "skip":
				t.Skipf("marked skip: %s", b.reason)
			case b.mark == "stop-demo":
				demo.stop(t)
			}
			if strings.Contains(code, ":8080") || strings.Contains(code, ":8081") {
				t.Fatalf("the block names a port the test does not rewrite (it rewrites 127.0.0.1:8080 and :8081):\n%s", code)
			}
			if interp != "" {
				if why := sdkMissing(work, interp, env); why != "" {
					t.Skipf("not run: %s", why)
				}
				runExample(t, work, env, interp, b, code)
				return
			}
			runShellBlock(t, work, state, env, b, code)
			checkResponses(t, filepath.Join(state, "responses"), b.line, &firstChat)
		})
		if !failed && t.Failed() {
			failed = true
		}
	}
	if firstChat && !failed {
		t.Errorf("no README example ran a chat completion")
	}
	demo.stop(t)
}

// demoServer is the `nozzle serve` process the examples talk to.
type demoServer struct {
	cmd  *exec.Cmd
	log  string
	done chan error
	err  error
}

// startDemo starts `nozzle serve` on addr with data/ under work, as `make
// run` does (with a smaller KV cache), and returns once /readyz answers
// and the demo is set up.
func startDemo(t *testing.T, exe, work, addr, lib string, env []string) *demoServer {
	t.Helper()
	log := filepath.Join(work, ".readme-test", "serve.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(exe, "serve", "--addr", addr, "--data", "data", "--engine-lib", lib, "--kv-memory-mb", "64", "--log-format", "text", "--log-level", "warn")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = work, append(env, "NOZZLE_TEST_MAIN=1"), f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demoServer{cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("nozzle serve exited: %v\n%s", err, tail(log))
		default:
		}
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			// /readyz answers once the model is loaded; the demo tenant,
			// its key and adapters are set up after (data/demo-ready).
			if _, err := os.Stat(filepath.Join(work, "data", "demo-ready")); err == nil && resp.StatusCode == 200 {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nozzle serve was not ready in 2 minutes\n%s", tail(log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops the server as SIGTERM does and expects a clean exit.
func (d *demoServer) stop(t *testing.T) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case d.err = <-d.done:
	case <-time.After(40 * time.Second):
		d.cmd.Process.Kill()
		d.err = fmt.Errorf("did not stop in 40 s after SIGTERM: %v", <-d.done)
	}
	d.cmd = nil
	if d.err != nil {
		t.Errorf("nozzle serve: %v\n%s", d.err, tail(d.log))
	}
}

// The bash around each block: the variables of the blocks before it,
// curl failing on HTTP errors and keeping each response, then the block,
// then its variables saved for the next.
const readmePrelude = `set -euo pipefail
__rt_names=$(compgen -v)
source "$__rt_state/vars.sh"
__rt_n=0
curl() {
  __rt_n=$((__rt_n + 1))
  local out="$__rt_state/responses/$__rt_block-$__rt_n"
  printf '%s\n' "$@" > "$out.args"
  local rc=0 fail=--fail-with-body a
  for a in "$@"; do # curl refuses --fail-with-body beside -f
    case "$a" in --fail | --fail-with-body | -f* | -[!-]*f*) fail=--fail ;; esac
  done
  command curl "$fail" -sS -D "$out.head" "$@" | tee "$out.body" || rc=$?
  [ $rc = 0 ] || echo "readme-test: curl failed (exit $rc): curl $*" >&2
  return $rc
}
source "$1"
for __rt_v in $(compgen -v); do
  case "$__rt_v" in __rt_*|_|BASH*) continue ;; esac
  grep -qxF "$__rt_v" <<<"$__rt_names" || declare -p "$__rt_v"
done > "$__rt_state/vars.sh.new"
mv "$__rt_state/vars.sh.new" "$__rt_state/vars.sh"
`

// runShellBlock runs one ```sh block with bash in its own process group,
// and stops whatever the block left running in the background.
func runShellBlock(t *testing.T, work, state string, env []string, b readmeBlock, code string) {
	t.Helper()
	script := filepath.Join(state, fmt.Sprintf("README.md:%d.sh", b.line))
	prelude := filepath.Join(state, "prelude.sh")
	if err := os.WriteFile(script, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prelude, []byte(readmePrelude), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", prelude, script)
	cmd.Env = append(env, "__rt_state="+state, fmt.Sprintf("__rt_block=%d", b.line))
	out, err := runGroup(t, cmd, work, filepath.Join(state, fmt.Sprintf("README.md:%d.out", b.line)))
	if err != nil {
		t.Fatalf("the block fails: %v\n%s\noutput:\n%s", err, indent(b.code), out)
	}
	t.Logf("output:\n%s", out)
}

// runExample runs a ```python or ```js block with its interpreter.
func runExample(t *testing.T, work string, env []string, interp string, b readmeBlock, code string) {
	t.Helper()
	ext := map[string]string{"python3": ".py", "node": ".mjs"}[interp]
	script := filepath.Join(work, fmt.Sprintf("readme-%d%s", b.line, ext))
	if err := os.WriteFile(script, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(interp, script)
	cmd.Env = env
	out, err := runGroup(t, cmd, work, script+".out")
	if err != nil {
		t.Fatalf("the example fails: %v\n%s\noutput:\n%s", err, indent(b.code), out)
	}
	t.Logf("output:\n%s", out)
}

// runGroup runs cmd in work, in a process group of its own, with its
// output in a file (background jobs keep it open), for at most 2 minutes;
// then it stops the group: SIGTERM, and SIGKILL after 40 s.
func runGroup(t *testing.T, cmd *exec.Cmd, work, outFile string) (string, error) {
	t.Helper()
	f, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Dir, cmd.Stdout, cmd.Stderr = work, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	var once sync.Once
	stopGroup := func() {
		once.Do(func() {
			syscall.Kill(-pgid, syscall.SIGTERM)
			for deadline := time.Now().Add(40 * time.Second); syscall.Kill(-pgid, 0) == nil; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					syscall.Kill(-pgid, syscall.SIGKILL)
					t.Errorf("processes the block left running did not stop in 40 s after SIGTERM")
					break
				}
			}
		})
	}
	t.Cleanup(stopGroup) // should the test stop before it ends
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		syscall.Kill(-pgid, syscall.SIGKILL)
		err = errors.Join(errors.New("timed out after 2 minutes"), <-done)
	}
	stopGroup()
	out, _ := os.ReadFile(outFile)
	return string(out), err
}

// sdkMissing says why a ```python or ```js example cannot run here, or ""
// when its interpreter has the openai package (for node, found with
// require, which NODE_PATH extends; it is linked into the work folder's
// node_modules, where the example's import finds it).
func sdkMissing(work, interp string, env []string) string {
	if _, err := exec.LookPath(interp); err != nil {
		return interp + " is not installed"
	}
	probe := map[string][]string{
		"python3": {"-c", "import openai"},
		"node": {"-p", `const p = require("path"); let d = require.resolve("openai");
			while (d !== p.dirname(d) && !(p.basename(d) === "openai" && p.basename(p.dirname(d)) === "node_modules")) d = p.dirname(d);
			d`},
	}[interp]
	cmd := exec.Command(interp, probe...)
	cmd.Dir, cmd.Env = work, env
	out, err := cmd.Output()
	if err != nil {
		return interp + " has no openai package"
	}
	if interp == "node" {
		link := filepath.Join(work, "node_modules", "openai")
		if _, err := os.Lstat(link); err != nil {
			os.MkdirAll(filepath.Dir(link), 0o755)
			if err := os.Symlink(strings.TrimSpace(string(out)), link); err != nil {
				return err.Error()
			}
		}
	}
	return ""
}

// checkResponses checks the responses curl got in one block: a successful
// one declared JSON parses, and the first chat completion has choices.
func checkResponses(t *testing.T, dir string, line int, firstChat *bool) {
	t.Helper()
	heads, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("%d-*.head", line)))
	sort.Slice(heads, func(i, j int) bool {
		return len(heads[i]) < len(heads[j]) || len(heads[i]) == len(heads[j]) && heads[i] < heads[j]
	})
	for _, h := range heads {
		base := strings.TrimSuffix(h, ".head")
		args, _ := os.ReadFile(base + ".args")
		body, _ := os.ReadFile(base + ".body")
		status, ctype := lastResponse(h)
		argv := strings.Split(strings.TrimSpace(string(args)), "\n")
		t.Logf("curl %s → %s %s", strings.Join(argv, " "), status, ctype)
		if len(body) == 0 && (containsAny(argv, "-o", "--output", "-O", "--remote-name")) {
			continue // the body went to a file
		}
		if !strings.Contains(status, " 2") {
			continue // an error the block tolerated (curl -f in a condition): curl -f shows no body
		}
		if strings.Contains(ctype, "jsonl") {
			// JSON Lines (a batch's output file): each line parses
			for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
				if !json.Valid([]byte(line)) {
					t.Errorf("curl %s: a line of the %s answer does not parse: %q", strings.Join(argv, " "), ctype, line)
				}
			}
		} else if strings.Contains(ctype, "json") && !json.Valid(body) {
			t.Errorf("curl %s: the %s answer does not parse: %q", strings.Join(argv, " "), ctype, body)
		}
		if *firstChat && containsSub(argv, "/v1/chat/completions") {
			*firstChat = false
			var c struct {
				Object  string `json:"object"`
				Choices []struct {
					Message struct {
						Role    string  `json:"role"`
						Content *string `json:"content"`
					} `json:"message"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(body, &c); err != nil || c.Object != "chat.completion" || len(c.Choices) == 0 ||
				c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content == nil || c.Choices[0].FinishReason == "" || c.Usage.CompletionTokens == 0 {
				t.Errorf("the first chat completion does not answer a choice: %v %s", err, body)
			}
		}
	}
}

// lastResponse reads the status line and Content-Type of the last
// response in a curl -D file (an upload's 100 Continue comes first).
func lastResponse(path string) (status, ctype string) {
	f, err := os.Open(path)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "HTTP/") {
			status, ctype = l, ""
		} else if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Content-Type") {
			ctype = strings.TrimSpace(v)
		}
	}
	return status, ctype
}

func containsAny(argv []string, s ...string) bool {
	for _, a := range argv {
		for _, x := range s {
			if a == x {
				return true
			}
		}
	}
	return false
}

func containsSub(argv []string, s string) bool {
	for _, a := range argv {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// tail returns the end of a log file.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
