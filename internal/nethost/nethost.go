// Package nethost makes a network of "hosts" on one machine. Each host is
// a process holding fresh network, mount and IPC namespaces: its own
// interfaces and address, its own mount table (a FUSE mount made there is
// seen only there), its own /dev/shm (a tmpfs) and SysV IPC. The hosts'
// eth0 interfaces are veth pairs whose other ends sit on a bridge in a
// switch namespace of their own, so that no address or interface appears
// in the caller's namespaces. Commands run inside a host through
// nsenter(1). The end-to-end tests (internal/netnstest, which wraps this
// package for testing.TB) and the benchmark's remote cases
// (bench/harness) use it. It needs root and unshare, nsenter and ip.
package nethost

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Subnet is the /24 the hosts' addresses come from: host i (from 0) is
// Subnet.(i+1). Every Network has its own switch, so that networks made
// at the same time never meet.
const Subnet = "10.77.0"

// Network is a set of hosts on one switch.
type Network struct {
	sw    *holder
	hosts map[string]*Host
	order []*Host
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

// Check reports what this machine lacks to make hosts (root, unshare,
// nsenter, ip), or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (util-linux, iproute2): %w", tool, err)
		}
	}
	return nil
}

// New makes hosts with the given names, joined by one switch. Close
// removes them.
func New(names ...string) (_ *Network, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	n := &Network{hosts: map[string]*Host{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.sw, err = newHolder("switch", true, "ip link set lo up && ip link add br0 type bridge && ip link set br0 up"); err != nil {
		return nil, err
	}
	for i, name := range names {
		if _, dup := n.hosts[name]; dup {
			return nil, fmt.Errorf("nethost: host %q twice", name)
		}
		h := &Host{Name: name, IP: fmt.Sprintf("%s.%d", Subnet, i+1), n: n, port: fmt.Sprintf("p%d", i)}
		// A private mount tree (nothing propagates back to the caller's),
		// and a /dev/shm of its own.
		if h.h, err = newHolder(name, false, "mount -t tmpfs -o mode=1777 shm /dev/shm && ip link set lo up"); err != nil {
			return nil, err
		}
		n.hosts[name] = h
		n.order = append(n.order, h)
		for _, step := range [][]string{
			{"switch", "ip", "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(h.h.pid())},
			{"switch", "ip", "link", "set", h.port, "master", "br0", "up"},
			{name, "ip", "addr", "add", h.IP + "/24", "dev", "eth0"},
			{name, "ip", "link", "set", "eth0", "up"},
		} {
			on := n.sw
			if step[0] != "switch" {
				on = h.h
			}
			if _, err := on.run(step[1], step[2:]...); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// Close ends the processes holding the namespaces; the namespaces go with
// the last process in them, so processes started in a host should be
// ended first.
func (n *Network) Close() {
	for _, h := range n.order {
		h.h.close()
	}
	if n.sw != nil {
		n.sw.close()
	}
}

// Host returns the host of that name, or nil.
func (n *Network) Host(name string) *Host { return n.hosts[name] }

// Switch runs a command in the switch's network namespace (ip link on a
// host's port) and returns its combined output.
func (n *Network) Switch(name string, args ...string) (string, error) { return n.sw.run(name, args...) }

// Port is the switch's end of the host's veth pair: ip link set it down
// and the host is cut from every other.
func (h *Host) Port() string { return h.port }

// PID is the process that holds the host's namespaces.
func (h *Host) PID() int { return h.h.pid() }

// Addr is ip:port of the host.
func (h *Host) Addr(port int) string { return fmt.Sprintf("%s:%d", h.IP, port) }

// Path is p as the host's processes see it (through /proc/PID/root of the
// process holding its namespaces): the caller reads and writes the files
// of the host's own mounts, such as an agent's, through it.
func (h *Host) Path(p string) string {
	return filepath.Join("/proc", strconv.Itoa(h.h.pid()), "root", p)
}

// MountInfo is the path of the host's mountinfo (proc(5)).
func (h *Host) MountInfo() string {
	return filepath.Join("/proc", strconv.Itoa(h.h.pid()), "mountinfo")
}

// Command returns a command that runs inside the host's namespaces,
// killed with SIGKILL if the caller dies.
func (h *Host) Command(name string, args ...string) *exec.Cmd { return h.h.command(name, args...) }

// Run runs a command in the host to completion and returns its combined
// output; the error says what failed, with that output.
func (h *Host) Run(name string, args ...string) (string, error) { return h.h.run(name, args...) }

// InNet runs f on a thread that is in the host's network namespace: a
// socket f opens (net.Listen, net.Dial) lives there, so the caller can
// listen on or reach the host's addresses without a process inside it.
func (h *Host) InNet(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- h.inNet(f)
	}()
	return <-errc
}

// inNet runs f in the host's network namespace on this (locked) thread
// and unlocks it only if it could go back to its own namespace: else the
// thread ends with the goroutine.
func (h *Host) inNet(f func() error) error {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", h.PID()))
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("nethost: enter %s's network: %w", h.Name, err)
	}
	err = f()
	if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return err
}

// holder is the process whose namespaces a host (or the switch) is.
type holder struct {
	name    string
	netOnly bool // the switch: enter its network namespace only
	cmd     *exec.Cmd
	done    chan struct{}
}

// newHolder starts unshare with a new network namespace (and, unless
// netOnly, new mount and IPC namespaces with a private mount tree), runs
// setup inside, and keeps the namespaces until close.
func newHolder(name string, netOnly bool, setup string) (*holder, error) {
	args := []string{"--net"}
	if !netOnly {
		args = append(args, "--mount", "--ipc", "--propagation", "private")
	}
	args = append(args, "--", "sh", "-c", setup+" && echo ready && exec sleep infinity")
	cmd := exec.Command("unshare", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nethost: %s: %w", name, err)
	}
	h := &holder{name: name, netOnly: netOnly, cmd: cmd, done: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if sc.Text() == "ready" {
				ok = true
				break
			}
		}
		ready <- ok
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(h.done)
	}()
	select {
	case ok := <-ready:
		if ok {
			return h, nil
		}
		<-h.done
		return nil, fmt.Errorf("nethost: %s: unshare %s: %v: %s", name, strings.Join(args, " "), cmd.ProcessState, strings.TrimSpace(errb.String()))
	case <-time.After(10 * time.Second):
		h.close()
		return nil, fmt.Errorf("nethost: %s: not ready within 10 s", name)
	}
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

func (h *holder) close() {
	h.cmd.Process.Kill()
	<-h.done
}

func (h *holder) command(name string, args ...string) *exec.Cmd {
	ns := []string{"-t", strconv.Itoa(h.pid()), "--net", "--mount", "--ipc", "--"}
	if h.netOnly {
		ns = []string{"-t", strconv.Itoa(h.pid()), "--net", "--"}
	}
	cmd := exec.Command("nsenter", append(ns, append([]string{name}, args...)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (h *holder) run(name string, args ...string) (string, error) {
	out, err := h.command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nethost: %s: %s %s: %w\n%s", h.name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
