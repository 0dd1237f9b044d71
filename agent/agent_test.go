package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/fs"
	"github.com/shimmy-dev/shimmy/internal/agenttest"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/registry"
)

// eventually polls f until it returns nil, failing t after timeout.
var eventually = wait.Eventually

type running struct {
	a    *agent.Agent
	stop func() error // cancels Run and returns its error
}

// frontEnd is the node binary's: the FUSE tree, open to other users.
var frontEnd = fs.FrontEnd(fs.MountOptions{AllowOther: true})

// testConfig serves metrics on a free port, for the tests that scrape it.
func testConfig(t testing.TB) agent.Config {
	cfg := agenttest.Config(t, frontEnd)
	cfg.MetricsAddr = "127.0.0.1:0"
	return cfg
}

// start runs an agent until the test ends.
func start(t testing.TB, cfg agent.Config) *running {
	t.Helper()
	a, stop := agenttest.Start(t, cfg)
	return &running{a: a, stop: stop}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*agent.Config)
	}{
		{"no front end", func(c *agent.Config) { c.FrontEnd = nil }},
		{"relative mount", func(c *agent.Config) { c.MountPoint = "run/shimmy" }},
		{"relative state", func(c *agent.Config) { c.StateDir = "shm" }},
		{"state inside mount", func(c *agent.Config) { c.StateDir = c.MountPoint + "/state" }},
		{"bad metrics addr", func(c *agent.Config) { c.MetricsAddr = "nohostport" }},
		{"bad default capacity", func(c *agent.Config) { c.Defaults.Capacity = 3000 }},
		{"reap slower than lease", func(c *agent.Config) { c.ReapInterval = 30 * time.Second }},
		{"kubernetes without a node name", func(c *agent.Config) { c.Kubernetes = &agent.KubernetesConfig{Kubeconfig: "/k"} }},
		{"relative pod directory", func(c *agent.Config) { c.PodDir = "run/pods" }},
		{"pod directory inside the mount", func(c *agent.Config) { c.PodDir = c.MountPoint + "/pods" }},
		{"mount inside the pod directory", func(c *agent.Config) { c.PodDir = filepath.Dir(c.MountPoint) }},
		{"pod directory in the state directory", func(c *agent.Config) { c.PodDir = c.StateDir + "/pods" }},
	} {
		cfg := agent.DefaultConfig()
		cfg.FrontEnd = frontEnd
		if _, err := agent.New(cfg); err != nil {
			t.Fatalf("the default configuration with a front end: %v", err)
		}
		tc.mod(&cfg)
		if _, err := agent.New(cfg); !errors.Is(err, agent.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tc.name, err)
		}
	}
	cfg := agent.DefaultConfig()
	cfg.FrontEnd = frontEnd
	cfg.MetricsAddr = "off"
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.Config().MetricsAddr != "" {
		t.Errorf("metrics \"off\" kept as %q", a.Config().MetricsAddr)
	}
}

func TestRunServesAndStops(t *testing.T) {
	cfg := testConfig(t)
	mnt := cfg.MountPoint
	r := start(t, cfg)
	if ok, err := mountpoint.IsMounted(mnt); err != nil || !ok {
		t.Fatalf("not mounted: %v", err)
	}
	base := "http://" + r.a.MetricsAddr()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "ns", "ch"), 0o755); err != nil {
		t.Fatal(err)
	}
	pub := testenv.Open(t, filepath.Join(mnt, "ns", "ch", "pub"), unix.O_WRONLY)
	testenv.MustWrite(t, pub, "x")
	_, body := get("/metrics")
	for _, want := range []string{
		`shimmy_channel_messages_total{channel="ch",namespace="ns"} 1`,
		`shimmy_channel_publishers{channel="ch",namespace="ns"} 1`,
		"shimmy_mounted 1",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Stopping with a file still open detaches the mount; the open file
	// then fails instead of reaching unmapped rings.
	if err := r.stop(); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if ok, _ := mountpoint.IsMounted(mnt); ok {
		t.Error("still mounted after Run returned")
	}
	if _, err := unix.Write(pub, []byte("y")); err == nil {
		t.Error("write to a file of the stopped agent succeeded")
	}
}

func TestRestartRecovery(t *testing.T) {
	cfg := testConfig(t)
	mnt := cfg.MountPoint
	r := start(t, cfg)
	dir := filepath.Join(mnt, "ns", "ch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pub := testenv.Open(t, filepath.Join(dir, "pub"), unix.O_WRONLY)
	for i := 0; i < 3; i++ {
		testenv.MustWrite(t, pub, fmt.Sprint("m", i))
	}
	unix.Close(pub)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	start(t, cfg)
	sub := testenv.Open(t, filepath.Join(dir, "sub.oldest"), unix.O_RDONLY)
	var got string
	for len(got) < len("m0\nm1\nm2\n") {
		got += testenv.MustRead(t, sub, 4096)
	}
	if got != "m0\nm1\nm2\n" {
		t.Errorf("after restart: %q", got)
	}
}

// A crashed agent leaves a dead FUSE mount; the next agent clears it.
func TestRunClearsStaleMount(t *testing.T) {
	cfg := testConfig(t)
	mnt := cfg.MountPoint
	testenv.DeadFUSE(t, mnt, mountpoint.FSType)
	start(t, cfg)
	if err := os.Mkdir(filepath.Join(mnt, "ns"), 0o755); err != nil {
		t.Fatalf("mkdir on the new mount: %v", err)
	}
}

// The agent evicts members whose lease ran out (a client that died).
func TestReapsDeadMembers(t *testing.T) {
	cfg := testConfig(t)
	mnt, state := cfg.MountPoint, cfg.StateDir
	start(t, cfg)
	dir := filepath.Join(mnt, "ns", "ch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Plant a publisher slot whose owner "died" long ago, as a SIGKILLed
	// mmap client leaves it.
	mem := testenv.MapFile(t, filepath.Join(state, "ns", "ch", "ring"))
	slot := mem[channel.HeaderLen:]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffRole])), channel.RolePublisher)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&slot[channel.MOffLease])), 1)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffState])), channel.MemberActive)
	eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(dir, "stats"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "reaped 1\n") || !strings.Contains(string(b), "publishers 0\n") {
			return fmt.Errorf("stats:\n%s", b)
		}
		return nil
	})
	// The agent's heartbeat is in the header: a visit stamps it after it
	// reaps, so it may follow the count by a moment.
	eventually(t, 10*time.Second, func() error {
		beat := atomic.LoadUint64((*uint64)(unsafe.Pointer(&mem[channel.OffAgentBeat])))
		if pid := atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[channel.OffAgentPid]))); beat == 0 || pid != uint32(os.Getpid()) {
			return fmt.Errorf("agent heartbeat %d, pid %d: not set", beat, pid)
		}
		return nil
	})
}

// One shutdown path: the mount taken away from outside ends the FUSE part,
// which stops the reaper and the metrics server, and Run returns nil.
func TestRunEndsWhenUnmountedFromOutside(t *testing.T) {
	cfg := testConfig(t)
	mnt := cfg.MountPoint
	r := start(t, cfg)
	addr := r.a.MetricsAddr()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running after its mount went away")
	}
	if err := r.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("metrics server still answers after Run returned")
	}
}

// A front end that cannot mount fails Start with its error, before
// anything is served.
func TestStartReportsFrontEndError(t *testing.T) {
	errMount := errors.New("no mount for you")
	cfg := agenttest.Config(t, func(string, *registry.Registry, logrus.FieldLogger) (func(), bool, error) {
		return nil, false, errMount
	})
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if stop, err := a.Start(context.Background()); !errors.Is(err, errMount) || stop != nil {
		t.Fatalf("Start: %v, want %v", err, errMount)
	}
	select {
	case <-a.Ready():
		t.Error("Ready closed although nothing was mounted")
	default:
	}
	<-a.Done()
}
