// Package agenttest runs an in-process node agent for tests: on a mount
// point in t.TempDir() with a fresh state directory, stopped at cleanup.
// It takes the front end from its caller, so that only tests link the
// FUSE adapter through it.
package agenttest

import (
	"context"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// Config is an agent configuration for a test: fe as the front end, a
// fresh mount point and state directory, no metrics server, a quiet log and
// a fast reaper.
func Config(t testing.TB, fe agent.FrontEnd) agent.Config {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.FrontEnd = fe
	cfg.MountPoint, cfg.StateDir = t.TempDir(), testenv.ShmDir(t, "shimmy-agent-test-")
	cfg.MetricsAddr = agent.MetricsOff
	cfg.Log = testenv.QuietLog()
	cfg.ReapInterval = 10 * time.Millisecond
	return cfg
}

// Start runs an agent on cfg until the test ends, when a Run error fails
// the test; stop ends it earlier and returns Run's error. A machine that
// cannot mount FUSE skips the test.
func Start(t testing.TB, cfg agent.Config) (a *agent.Agent, stop func() error) {
	t.Helper()
	testenv.NeedFUSE(t)
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop, err = a.Start(ctx)
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	return a, stop
}
