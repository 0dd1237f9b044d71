package agent

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

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/mountpoint"
)

// eventually polls f until it returns nil, failing t after timeout.
var eventually = wait.Eventually

func quietLog() *logrus.Logger { return testenv.QuietLog() }

func stateDir(t testing.TB) string { return testenv.ShmDir(t, "shimmy-agent-test-") }

type running struct {
	a    *Agent
	stop func() error    // cancels Run and returns its error
	done <-chan struct{} // closed when Run has returned
}

func testConfig(t testing.TB, mnt, state string) Config {
	cfg := DefaultConfig()
	cfg.MountPoint, cfg.StateDir = mnt, state
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Log = quietLog()
	cfg.ReapInterval = 10 * time.Millisecond
	return cfg
}

// start runs an agent until the test ends.
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent mounts FUSE directly, which needs root here")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var result error
	go func() {
		result = a.Run(ctx)
		close(done)
	}()
	select {
	case <-a.Ready():
	case <-done:
		cancel()
		t.Fatalf("Run: %v", result)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("agent not ready")
	}
	stop := func() error {
		cancel()
		<-done
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &running{a: a, stop: stop, done: done}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"relative mount", func(c *Config) { c.MountPoint = "run/shimmy" }},
		{"relative state", func(c *Config) { c.StateDir = "shm" }},
		{"state inside mount", func(c *Config) { c.StateDir = c.MountPoint + "/state" }},
		{"bad metrics addr", func(c *Config) { c.MetricsAddr = "nohostport" }},
		{"bad default capacity", func(c *Config) { c.Defaults.Capacity = 3000 }},
		{"reap slower than lease", func(c *Config) { c.ReapInterval = 30 * time.Second }},
	} {
		cfg := DefaultConfig()
		tc.mod(&cfg)
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tc.name, err)
		}
	}
	cfg := DefaultConfig()
	cfg.MetricsAddr = "off"
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.Config().MetricsAddr != "" {
		t.Errorf("metrics \"off\" kept as %q", a.Config().MetricsAddr)
	}
}

func TestRunServesAndStops(t *testing.T) {
	mnt, state := t.TempDir(), stateDir(t)
	r := start(t, testConfig(t, mnt, state))
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
	mnt, state := t.TempDir(), stateDir(t)
	cfg := testConfig(t, mnt, state)
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
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mnt, state := t.TempDir(), stateDir(t)
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	if err := unix.Mount("shimmy", mnt, mountpoint.FSType, 0, fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)); err != nil {
		t.Skipf("cannot mount FUSE: %v", err)
	}
	unix.Close(fd)
	if _, err := os.Stat(mnt); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("stale mount stat: %v", err)
	}
	start(t, testConfig(t, mnt, state))
	if err := os.Mkdir(filepath.Join(mnt, "ns"), 0o755); err != nil {
		t.Fatalf("mkdir on the new mount: %v", err)
	}
}

// The agent evicts members whose lease ran out (a client that died).
func TestReapsDeadMembers(t *testing.T) {
	mnt, state := t.TempDir(), stateDir(t)
	start(t, testConfig(t, mnt, state))
	dir := filepath.Join(mnt, "ns", "ch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Plant a publisher slot whose owner "died" long ago, as a SIGKILLed
	// mmap client leaves it.
	f, err := os.OpenFile(filepath.Join(state, "ns", "ch", "ring"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, channel.HeaderLen+channel.MemberSlotLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
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
	// The agent's heartbeat is in the header.
	beat := atomic.LoadUint64((*uint64)(unsafe.Pointer(&mem[channel.OffAgentBeat])))
	if beat == 0 || atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[channel.OffAgentPid]))) != uint32(os.Getpid()) {
		t.Errorf("agent heartbeat %d not set", beat)
	}
}

// One shutdown path: the mount taken away from outside ends the FUSE part,
// which stops the reaper and the metrics server, and Run returns nil.
func TestRunEndsWhenUnmountedFromOutside(t *testing.T) {
	mnt, state := t.TempDir(), stateDir(t)
	r := start(t, testConfig(t, mnt, state))
	addr := r.a.MetricsAddr()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
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
