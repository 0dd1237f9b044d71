package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shimmy-dev/shimmy/bench/harness"
)

// The smoke run re-executes this test binary for its publisher and
// subscriber, as the real binary re-executes itself.
func TestMain(m *testing.M) {
	if code, ok := harness.Child(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func runBench(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help"} {
		code, out, errOut := runBench(t, h)
		if code != 0 || errOut != "" {
			t.Errorf("%s: code %d, stderr %q", h, code, errOut)
		}
		for _, want := range []string{"Usage:\n  shimmy-bench", "--quick", "--remote", "--shimmy", "--systems", "--no-agent", "--replot", "Example:"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: help lacks %q:\n%s", h, want, out)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--nosuchflag"}, {"extra"}, {"--out"}} {
		code, out, errOut := runBench(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "shimmy-bench --help") {
			t.Errorf("%q: code %d, stdout %q, stderr %q; want 2 and a hint", args, code, out, errOut)
		}
	}
}

// TestSmoke runs one quick case of the Unix socket baseline end to end:
// the children are real processes, and the report is written.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no child processes")
	}
	out := t.TempDir()
	code, _, errOut := runBench(t, "--quick", "--no-agent", "--systems", "unix-socket", "--cases", "throughput size=16B", "--out", out)
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil || !strings.Contains(string(md), "| unix-socket | 16B |") {
		t.Errorf("results.md: %v\n%s\n%s", err, md, errOut)
	}
}

// The node binary must not link the benchmark's peers: that is why this
// command exists.
func TestNodeBinaryLinksNoPeers(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool on PATH: %v", err)
	}
	deps, err := exec.Command(goBin, "list", "-deps", "github.com/shimmy-dev/shimmy/cmd/shimmy").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(deps)) {
		for _, peer := range []string{"nats-io", "redis", "paho", "gonum"} {
			if strings.Contains(dep, peer) {
				t.Errorf("cmd/shimmy links %s", dep)
			}
		}
	}
}
