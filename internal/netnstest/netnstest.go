// Package netnstest runs a network of "hosts" for tests. Each host is a
// process holding fresh network, mount and IPC namespaces: its own
// interfaces and address, its own mount table (an agent's FUSE mount made
// there is seen only there) and its own /dev/shm (a tmpfs: the rings of
// the agent that runs there) and SysV IPC. The hosts' eth0 interfaces are
// veth pairs whose other ends sit on a bridge in a switch namespace of
// their own, so that no address or interface appears in the test's own
// namespaces. Commands run inside a host through nsenter(1); faults are
// made with ip(8) (a port of the switch down), nft(8) (a share of packets
// dropped) and ss(8) -K (TCP connections reset). Everything is removed at
// cleanup, also when the test fails: the processes started in a host are
// killed, and the namespaces go with the last process holding them.
package netnstest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// Subnet is the /24 the hosts' addresses come from: host i (from 0) is
// Subnet.(i+1). Every Network has its own switch, so that networks of
// concurrent tests never meet.
const Subnet = "10.77.0"

// Network is a set of hosts on one switch.
type Network struct {
	t     testing.TB
	sw    *holder
	hosts map[string]*Host
}

// Host is one host of a Network.
type Host struct {
	Name string
	// IP is the host's address on the switch (its eth0).
	IP   string
	n    *Network
	h    *holder
	port string // the switch's end of the host's veth pair
}

// Need skips t unless this machine can make the hosts: root and the tools
// (unshare, nsenter, ip). Tools for faults are checked when used.
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (util-linux, iproute2): %v", tool, err)
		}
	}
}

// New makes hosts with the given names, joined by one switch, removed at
// cleanup.
func New(t testing.TB, names ...string) *Network {
	t.Helper()
	Need(t)
	n := &Network{t: t, hosts: map[string]*Host{}}
	n.sw = newHolder(t, "switch", []string{"--net"}, "ip link set lo up && ip link add br0 type bridge && ip link set br0 up")
	for i, name := range names {
		if _, dup := n.hosts[name]; dup {
			t.Fatalf("netnstest: host %q twice", name)
		}
		h := &Host{Name: name, IP: fmt.Sprintf("%s.%d", Subnet, i+1), n: n, port: fmt.Sprintf("p%d", i)}
		// A private mount tree (nothing propagates back to the test's),
		// and a /dev/shm of its own.
		h.h = newHolder(t, name, []string{"--net", "--mount", "--ipc", "--propagation", "private"},
			"mount -t tmpfs -o mode=1777 shm /dev/shm && ip link set lo up")
		n.sw.run(t, "ip", "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(h.h.pid()))
		n.sw.run(t, "ip", "link", "set", h.port, "master", "br0", "up")
		h.h.run(t, "ip", "addr", "add", h.IP+"/24", "dev", "eth0")
		h.h.run(t, "ip", "link", "set", "eth0", "up")
		n.hosts[name] = h
	}
	return n
}

// Host returns the host of that name.
func (n *Network) Host(name string) *Host {
	h, ok := n.hosts[name]
	if !ok {
		n.t.Fatalf("netnstest: no host %q", name)
	}
	return h
}

// Addr is ip:port of the host.
func (h *Host) Addr(port int) string { return fmt.Sprintf("%s:%d", h.IP, port) }

// Path is p as the host's processes see it (through /proc/PID/root of the
// process holding its namespaces): the test reads and writes the files of
// the host's own mounts, such as an agent's, through it.
func (h *Host) Path(p string) string {
	return filepath.Join("/proc", strconv.Itoa(h.h.pid()), "root", p)
}

// MountInfo is the path of the host's mountinfo (proc(5)).
func (h *Host) MountInfo() string {
	return filepath.Join("/proc", strconv.Itoa(h.h.pid()), "mountinfo")
}

// Command returns a command that runs inside the host's namespaces.
func (h *Host) Command(name string, args ...string) *exec.Cmd { return h.h.command(name, args...) }

// Run runs a command in the host to completion and returns its combined
// output, failing t if it fails.
func (h *Host) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return h.h.run(t, name, args...)
}

// Start starts a command in the host; it is killed at cleanup if it still
// runs.
func (h *Host) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, h.Command(name, args...))
}

// LinkDown takes the host's port on the switch down: the host is cut from
// every other host (packets in flight are lost, connections stay open on
// both ends until they time out). LinkUp restores it.
func (h *Host) LinkDown(t testing.TB) {
	t.Helper()
	h.n.sw.run(t, "ip", "link", "set", h.port, "down")
}

// LinkUp brings the host's port on the switch back up.
func (h *Host) LinkUp(t testing.TB) {
	t.Helper()
	h.n.sw.run(t, "ip", "link", "set", h.port, "up")
}

// DropShare makes the host drop percent of the packets it sends or
// receives on eth0, at random (nftables numgen); 0 removes the rule. The
// host's loopback is not affected.
func (h *Host) DropShare(t testing.TB, percent int) {
	t.Helper()
	needTool(t, "nft", "nftables")
	if percent < 0 || percent > 100 {
		t.Fatalf("netnstest: drop share %d%%", percent)
	}
	// Flushing a table that does not exist fails: make it first (add is
	// idempotent), then start from empty chains.
	rules := `add table inet netnstest
flush table inet netnstest
add chain inet netnstest in { type filter hook input priority 0; }
add chain inet netnstest out { type filter hook output priority 0; }
`
	if percent > 0 {
		share := fmt.Sprintf("numgen random mod 100 < %d ", percent)
		if percent == 100 {
			share = "" // out of numgen's range: every packet
		}
		rules += fmt.Sprintf("add rule inet netnstest in iifname \"eth0\" %sdrop\n", share)
		rules += fmt.Sprintf("add rule inet netnstest out oifname \"eth0\" %sdrop\n", share)
	}
	cmd := h.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("netnstest: nft on %s: %v\n%s", h.Name, err, out)
	}
}

// ResetTCP aborts the host's TCP connections whose local or remote port is
// port (ss -K): the host's sockets fail with ECONNABORTED and their peers
// get a reset. It returns how many connections it aborted.
func (h *Host) ResetTCP(t testing.TB, port int) int {
	t.Helper()
	needTool(t, "ss", "iproute2")
	filter := fmt.Sprintf("( sport = :%d or dport = :%d )", port, port)
	// ss prints every socket it destroyed; an "Invalid argument" from a
	// socket family without SOCK_DESTROY leaves the status 0.
	out, err := h.Command("ss", "-K", "-t", "-n", "-H", filter).Output()
	if err != nil {
		t.Fatalf("netnstest: ss -K on %s: %v", h.Name, err)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

func needTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is missing (Debian package %s; .ci/run installs it): %v", tool, pkg, err)
	}
}

// holder is the process whose namespaces a host (or the switch) is.
type holder struct {
	name string
	p    *Proc
}

// newHolder starts unshare with flags, runs setup inside, and keeps the
// namespaces until cleanup.
func newHolder(t testing.TB, name string, flags []string, setup string) *holder {
	t.Helper()
	args := append(flags, "--", "sh", "-c", setup+" && echo ready && exec sleep infinity")
	h := &holder{name: name, p: StartCmd(t, exec.Command("unshare", args...))}
	h.p.WaitLine(t, "ready", 10*time.Second)
	return h
}

func (h *holder) pid() int { return h.p.Cmd.Process.Pid }

func (h *holder) command(name string, args ...string) *exec.Cmd {
	ns := []string{"-t", strconv.Itoa(h.pid()), "--net", "--mount", "--ipc", "--"}
	if h.name == "switch" {
		ns = []string{"-t", strconv.Itoa(h.pid()), "--net", "--"}
	}
	cmd := exec.Command("nsenter", append(ns, append([]string{name}, args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (h *holder) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := h.command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("netnstest: %s: %s %s: %v\n%s", h.name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Proc is a process a test started; it is killed at cleanup if it still
// runs. Its output is kept for the test to read.
type Proc struct {
	Cmd    *exec.Cmd
	Out    *syncbuf.Buffer // stdout
	ErrOut *syncbuf.Buffer // stderr
	done   chan struct{}
	err    error
}

// StartCmd starts cmd (stdout and stderr kept in the Proc), killed with
// SIGKILL if the test process dies and at cleanup if it still runs.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: &syncbuf.Buffer{}, ErrOut: &syncbuf.Buffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.ErrOut
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, once Done.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Kill ends the process with SIGKILL (if it runs) and waits for it.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.Cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits up to timeout for the process to end and returns its error;
// it fails t if the process is still running then.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		t.Fatalf("%v did not end within %v; stdout %q, stderr %q", p.Cmd.Args, timeout, tail(p.Out.String()), tail(p.ErrOut.String()))
		return nil
	}
}

// WaitLine waits for a whole line of stdout.
func (p *Proc) WaitLine(t testing.TB, line string, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, p.Out, line, timeout)
}

// WaitErrLine waits for a line of stderr containing s (a log line).
func (p *Proc) WaitErrLine(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	p.waitFor(t, p.ErrOut, s, timeout)
}

func (p *Proc) waitFor(t testing.TB, out *syncbuf.Buffer, s string, timeout time.Duration) {
	t.Helper()
	wait.Eventually(t, timeout, func() error {
		if hasLine(out.String(), s, out == p.Out) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%v exited (%v) before %q: stdout %q, stderr %q", p.Cmd.Args, p.err, s, tail(p.Out.String()), tail(p.ErrOut.String()))
		}
		return fmt.Errorf("no %q from %v yet", s, p.Cmd.Args)
	})
}

// hasLine reports whether text has the line s (whole, or as a substring
// of a line).
func hasLine(text, s string, whole bool) bool {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l == s || !whole && strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func tail(s string) string {
	const keep = 2000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}
