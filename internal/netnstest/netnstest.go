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
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/nethost"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// Subnet is the /24 the hosts' addresses come from (nethost.Subnet).
const Subnet = nethost.Subnet

// Network is a set of hosts on one switch.
type Network struct {
	t     testing.TB
	n     *nethost.Network
	hosts map[string]*Host
}

// Host is one host of a Network: a nethost.Host (Name, IP, Addr, Path,
// MountInfo, Command) with test helpers.
type Host struct {
	*nethost.Host
	n *Network
}

// Need skips t unless this machine can make the hosts: root and the tools
// (unshare, nsenter, ip). Tools for faults are checked when used.
func Need(t testing.TB) {
	t.Helper()
	if err := nethost.Check(); err != nil {
		t.Skip(err)
	}
}

// New makes hosts with the given names, joined by one switch, removed at
// cleanup.
func New(t testing.TB, names ...string) *Network {
	t.Helper()
	Need(t)
	nn, err := nethost.New(names...)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so run last: after the processes started in the
	// hosts are killed.
	t.Cleanup(nn.Close)
	n := &Network{t: t, n: nn, hosts: map[string]*Host{}}
	for _, name := range names {
		n.hosts[name] = &Host{Host: nn.Host(name), n: n}
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

// Run runs a command in the host to completion and returns its combined
// output, failing t if it fails.
func (h *Host) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := h.Host.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
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
	h.n.switchRun(t, "ip", "link", "set", h.Port(), "down")
}

// LinkUp brings the host's port on the switch back up.
func (h *Host) LinkUp(t testing.TB) {
	t.Helper()
	h.n.switchRun(t, "ip", "link", "set", h.Port(), "up")
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

func (n *Network) switchRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if _, err := n.n.Switch(name, args...); err != nil {
		t.Fatal(err)
	}
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
