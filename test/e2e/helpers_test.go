package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/test/internal/member"
)

var (
	binDir     string
	shimmyBin  string
	podBin     string
	skipReason string
)

func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
		skipReason = "e2e tests need root (to mount FUSE and make namespaces)"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			skipReason = "e2e tests need /dev/fuse: " + err.Error()
		}
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "skipping e2e:", skipReason)
		os.Exit(m.Run())
	}
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	var err error
	binDir, err = os.MkdirTemp("", "shimmy-e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(binDir)
	// Non-root users run the helper in the permission test.
	if err := os.Chmod(binDir, 0o755); err != nil {
		return 0, err
	}
	shimmyBin = filepath.Join(binDir, "shimmy")
	podBin = filepath.Join(binDir, "pod")
	for bin, pkg := range map[string]string{shimmyBin: "github.com/shimmy-dev/shimmy/cmd/shimmy", podBin: "github.com/shimmy-dev/shimmy/test/e2e/internal/pod"} {
		if err := testenv.Build(bin, pkg); err != nil {
			return 0, err
		}
	}
	return m.Run(), nil
}

func requireE2E(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// eventually polls f until it returns nil, failing t after timeout.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	wait.Eventually(t, timeout, f)
}

// poll is eventually that returns the last error instead of failing.
func poll(timeout time.Duration, f func() error) error { return wait.Until(timeout, f) }

// agentProc is a shimmy agent running as a real process.
type agentProc struct {
	t       testing.TB
	mount   string
	state   string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *syncbuf.Buffer
	waitErr error
}

// newBase makes a world-traversable directory for a test's mount point
// and pods (t.TempDir is 0700, which would stop other users early).
func newBase(t testing.TB) string {
	t.Helper()
	base, err := os.MkdirTemp("", "shimmy-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

// startAgent runs "shimmy agent" on a fresh mount point and state dir.
func startAgent(t testing.TB, extra ...string) *agentProc {
	t.Helper()
	requireE2E(t)
	base := newBase(t)
	mount := filepath.Join(base, "mnt")
	if err := os.Mkdir(mount, 0o755); err != nil {
		t.Fatal(err)
	}
	state, err := os.MkdirTemp("/dev/shm", "shimmy-e2e-state-")
	if err != nil {
		t.Fatal(err)
	}
	a := &agentProc{t: t, mount: mount, state: state, log: &syncbuf.Buffer{}}
	a.args = append([]string{"agent", "--mount", mount, "--state-dir", state, "--metrics", "off"}, extra...)
	t.Cleanup(func() {
		a.stop()
		if ok, _ := mountpoint.IsMounted(mount); ok { // a killed agent leaves its mount
			mountpoint.Unmount(mount)
		}
		os.RemoveAll(state)
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(a.log.String(), 60))
		}
	})
	a.start()
	return a
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// start runs the agent process and waits until the mount answers.
func (a *agentProc) start() {
	a.t.Helper()
	a.cmd = exec.Command(shimmyBin, a.args...)
	a.cmd.Stdout = a.log
	a.cmd.Stderr = a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		a.waitErr = cmd.Wait()
		close(done)
	}(a.cmd, a.done)
	eventually(a.t, 20*time.Second, func() error {
		if a.exited() {
			return fmt.Errorf("agent exited: %v", a.waitErr)
		}
		if m, ok, err := mountpoint.Find(a.mount); err != nil || !ok || m.FSType != mountpoint.FSType {
			return fmt.Errorf("%s is not mounted yet (%v)", a.mount, err)
		}
		_, err := os.ReadDir(a.mount) // a dead mount of a killed agent fails here
		return err
	})
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// stop ends the agent with SIGTERM (SIGKILL if it lingers).
func (a *agentProc) stop() {
	if a.cmd == nil || a.exited() {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// kill ends the agent with SIGKILL and waits for it.
func (a *agentProc) kill() {
	a.cmd.Process.Kill()
	<-a.done
}

// alive fails the test if the agent has exited.
func (a *agentProc) alive(t testing.TB) {
	t.Helper()
	if a.exited() {
		t.Fatalf("agent exited: %v", a.waitErr)
	}
}

// mkChan creates <ns>/<ch> under the mount and applies ctl lines.
func (a *agentProc) mkChan(t testing.TB, name, ctl string) string {
	t.Helper()
	dir := filepath.Join(a.mount, name)
	if err := os.Mkdir(filepath.Dir(dir), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if ctl != "" {
		if err := writeOnce(filepath.Join(dir, "ctl"), []byte(ctl)); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "error"))
			t.Fatalf("ctl %q: %v (%s)", ctl, err, b)
		}
	}
	return dir
}

// writeOnce writes b with a single write(2).
func writeOnce(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// kv reads a "key value" file.
func kv(path string) (map[string]string, error) {
	p, err := chanfile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return p.Map(), nil
}

// stat returns one numeric statistic of a channel.
func stat(dir, key string) (uint64, error) {
	m, err := kv(filepath.Join(dir, chanfile.Stats))
	if err != nil {
		return 0, err
	}
	v, ok := m[key]
	if !ok {
		return 0, fmt.Errorf("stats has no %q: %v", key, m)
	}
	switch v {
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	return strconv.ParseUint(v, 10, 64)
}

// waitStat waits until stats key reaches at least want.
func waitStat(t testing.TB, dir, key string, want uint64) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		n, err := stat(dir, key)
		if err != nil {
			return err
		}
		if n < want {
			return fmt.Errorf("%s: %s is %d, want at least %d", dir, key, n, want)
		}
		return nil
	})
}

// message is message i of a run, as the pod helper makes it.
func message(i, size int) []byte { return member.Message(i, size) }

// runFnv is the pod helper's checksum of messages start..start+n-1.
func runFnv(start, n, size int) uint64 { return member.Fnv(start, n, size) }

// lines returns the expected output of a line subscriber for messages start..start+n-1.
func lines(start, n, size int) string {
	var b strings.Builder
	for i := start; i < start+n; i++ {
		b.Write(message(i, size))
		b.WriteByte('\n')
	}
	return b.String()
}

// mapRing maps <dir>/ring through the mount and opens the ring, until
// cleanup.
func mapRing(t testing.TB, dir string) *channel.Ring {
	t.Helper()
	r, err := channel.MapFile(filepath.Join(dir, "ring"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// proc is a child process whose output the test watches.
type proc struct {
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	errOut *syncbuf.Buffer
	done   chan struct{}
	err    error
}

func startProc(t testing.TB, attr *syscall.SysProcAttr, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &syncbuf.Buffer{}, errOut: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errOut
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGKILL
	p.cmd.SysProcAttr = attr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// sh starts "sh -c script".
func sh(t testing.TB, script string) *proc {
	t.Helper()
	return startProc(t, nil, "sh", "-c", script)
}

// shRun runs a shell script to completion and fails the test if it fails.
func shRun(t testing.TB, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v\n%s", script, err, out)
	}
	return string(out)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit (failing the test after a minute).
func (p *proc) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		t.Fatalf("%v did not finish; stdout %q stderr %q", p.cmd.Args, tail(p.out.String(), 5), p.errOut.String())
		return nil
	}
}

// waitLine waits for a line of the process's output.
func (p *proc) waitLine(t testing.TB, line string) {
	t.Helper()
	p.waitFor(t, p.out, line)
}

// waitErrLine waits for a line of the process's stderr.
func (p *proc) waitErrLine(t testing.TB, line string) {
	t.Helper()
	p.waitFor(t, p.errOut, line)
}

// waitFor waits for a line in out, one of the process's streams.
func (p *proc) waitFor(t testing.TB, out *syncbuf.Buffer, line string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if strings.Contains(out.String(), line+"\n") {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%v exited (%v) before %q: %s %s", p.cmd.Args, p.err, line, p.out.String(), p.errOut.String())
		}
		return fmt.Errorf("no %q from %v yet", line, p.cmd.Args)
	})
}

// Result is the pod helper's last line.
type Result = member.Result

// helper starts the pod helper binary.
func helper(t testing.TB, attr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	return startProc(t, attr, podBin, args...)
}

// result waits for the helper to finish and parses its result.
func (p *proc) result(t testing.TB) Result {
	t.Helper()
	err := p.wait(t)
	out := strings.TrimSpace(p.out.String())
	r, jerr := member.ParseResult(out)
	if jerr != nil {
		t.Fatalf("helper %v: %v; output %q, stderr %q", p.cmd.Args, err, out, p.errOut.String())
	}
	if err != nil || r.Error != "" {
		t.Fatalf("helper %v failed: %v: %s (stderr %q)", p.cmd.Args[1:], err, r.Error, p.errOut.String())
	}
	return r
}

// checkRun verifies a helper's result: n messages from start, in order, checksum.
func checkRun(t testing.TB, who string, r Result, start, n, size int) {
	t.Helper()
	if r.Count != n || !r.InOrder || r.Fnv != runFnv(start, n, size) {
		t.Errorf("%s: %d messages (want %d), in order %v, fnv %#x (want %#x), first %q last %q",
			who, r.Count, n, r.InOrder, r.Fnv, runFnv(start, n, size), r.First, r.Last)
	}
}

// freePort returns a loopback address with a port that was free.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
