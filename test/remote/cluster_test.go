package remote

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/internal/netnstest"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/mirror"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/test/internal/member"
)

// mirrorPort is where every host's agent accepts mirror links.
const mirrorPort = 7470

// cluster is a set of hosts, each running a shimmy agent with a mirror.
// Every host's plan lists all the other hosts as peers and shares the
// channels of c.shares with all of them.
type cluster struct {
	t      *testing.T
	net    *netnstest.Network
	base   string
	caDir  string
	nodes  map[string]*node
	names  []string
	shares []mirror.Share
}

// node is one host and its agent.
type node struct {
	c                *cluster
	name             string
	h                *netnstest.Host
	mount, tls, plan string
	agent            *netnstest.Proc
	logs             string // the logs of the agent's earlier runs
}

// newCluster makes the hosts and their TLS directories (one CA) and plan
// files; start runs the agents.
func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	c := &cluster{t: t, net: netnstest.New(t, names...), nodes: map[string]*node{}, names: names}
	base, err := os.MkdirTemp("", "shimmy-remote-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	c.base, c.caDir = base, filepath.Join(base, "ca")
	c.shimmy("certs", "ca", "--out", c.caDir)
	for _, name := range names {
		n := &node{c: c, name: name, h: c.net.Host(name), mount: filepath.Join(base, name, "mnt"),
			tls: filepath.Join(base, name, "tls"), plan: filepath.Join(base, name, "plan.json")}
		if err := os.MkdirAll(n.mount, 0o755); err != nil {
			t.Fatal(err)
		}
		c.shimmy("certs", "node", "--name", name, "--ca-dir", c.caDir, "--out", n.tls)
		c.nodes[name] = n
	}
	c.writePlans()
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range c.names {
				t.Logf("agent %s log:\n%s", name, tail(c.nodes[name].log(), 40))
			}
		}
	})
	return c
}

// running starts a cluster of the named hosts sharing ns/ch (made with
// the create flags given) and waits until its links are up.
func running(t *testing.T, names []string, ns, ch string, create ...string) (*cluster, string) {
	t.Helper()
	c := newCluster(t, names...)
	c.start()
	path := c.share(ns, ch, create...)
	c.linksUp()
	return c, path
}

// shimmy runs the shimmy binary in the test's namespaces.
func (c *cluster) shimmy(args ...string) string {
	c.t.Helper()
	out, err := execOut(shimmyBin, args...)
	if err != nil {
		c.t.Fatalf("shimmy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// node returns the node of that name.
func (c *cluster) node(name string) *node { return c.nodes[name] }

// start runs every agent and waits for its mount.
func (c *cluster) start() {
	c.t.Helper()
	for _, name := range c.names {
		c.nodes[name].start()
	}
}

// writePlans writes every host's plan file.
func (c *cluster) writePlans() {
	c.t.Helper()
	for _, n := range c.nodes {
		var p mirror.Plan
		var others []string
		for _, o := range c.names {
			if o != n.name {
				p.Peers = append(p.Peers, mirror.Peer{Name: o, Addr: c.nodes[o].h.Addr(mirrorPort)})
				others = append(others, o)
			}
		}
		for _, s := range c.shares {
			p.Shares = append(p.Shares, mirror.Share{Namespace: s.Namespace, Channel: s.Channel, Peers: others})
		}
		b, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(n.plan, b, 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
}

// share creates ns/ch on every host with the create flags given and adds
// it to every plan (applied at once: SIGHUP). It returns the channel's
// directory under each host's mount.
func (c *cluster) share(ns, ch string, create ...string) string {
	c.t.Helper()
	for _, name := range c.names {
		n := c.nodes[name]
		n.run(shimmyBin, append([]string{"create", "--mount", n.mount, ns + "/" + ch}, create...)...)
	}
	c.shares = append(c.shares, mirror.Share{Namespace: ns, Channel: ch})
	c.writePlans()
	for _, name := range c.names {
		c.nodes[name].hup()
	}
	return filepath.Join(ns, ch)
}

// linksUp waits until every agent reports every link up (shimmy stat
// --links, run in its host against its metrics server).
func (c *cluster) linksUp() {
	c.t.Helper()
	wait.Eventually(c.t, 60*time.Second, func() error {
		for _, name := range c.names {
			n := c.nodes[name]
			for peer, l := range n.links() {
				if l.state != "up" {
					return fmt.Errorf("%s's link to %s is %s", name, peer, l.state)
				}
			}
			if got := len(n.links()); got != len(c.names)-1 {
				return fmt.Errorf("%s has %d links, want %d", name, got, len(c.names)-1)
			}
		}
		return nil
	})
}

// flowing publishes a probe into ch on host from and waits until every
// other host's replica has it: the flows of ch are open. Subscribers
// started afterwards (from the newest message) do not see it.
func (c *cluster) flowing(from, ch string) {
	c.t.Helper()
	n := c.nodes[from]
	before := map[string]uint64{}
	for _, name := range c.names {
		before[name] = c.nodes[name].stat(ch, "messages")
	}
	n.run(shimmyBin, "pub", "--mount", n.mount, ch, "probe")
	wait.Eventually(c.t, 60*time.Second, func() error {
		for _, name := range c.names {
			if got := c.nodes[name].stat(ch, "messages"); got <= before[name] {
				return fmt.Errorf("the probe has not reached %s's %s (messages %d)", name, ch, got)
			}
		}
		return nil
	})
}

// args are the agent's command line: its own mount, a state directory in
// its host's /dev/shm, metrics on its host's loopback, a mirror.
func (n *node) args() []string {
	return []string{"agent", "--mount", n.mount, "--state-dir", "/dev/shm/shimmy", "--metrics", "127.0.0.1:9477",
		"--mirror-listen", n.h.Addr(mirrorPort), "--mirror-tls-dir", n.tls, "--mirror-plan", n.plan,
		"--mirror-timeout", "2s", "--log-level", "info"}
}

// start runs the agent in its host and waits until its mount answers.
func (n *node) start() {
	t := n.c.t
	t.Helper()
	n.agent = n.h.Start(t, shimmyBin, n.args()...)
	wait.Eventually(t, 30*time.Second, func() error {
		if n.agent.Exited() {
			return fmt.Errorf("agent %s exited: %v\n%s", n.name, n.agent.Err(), tail(n.agent.ErrOut.String(), 20))
		}
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(n.agent.Cmd.Process.Pid), "mountinfo"))
		if err != nil {
			return err
		}
		defer f.Close()
		ms, err := mountpoint.ParseMountInfo(f)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Point == n.mount && m.FSType == mountpoint.FSType {
				_, err := os.ReadDir(n.path("")) // a killed agent's mount fails here
				return err
			}
		}
		return fmt.Errorf("%s: %s not mounted yet", n.name, n.mount)
	})
}

// kill ends the agent with SIGKILL: its mount stays, dead, until the next
// agent clears it; its rings stay in the host's /dev/shm.
func (n *node) kill() {
	n.agent.Kill()
	n.logs += n.agent.ErrOut.String()
}

// restart kills the agent and starts a new one on the same state.
func (n *node) restart() {
	n.kill()
	n.start()
}

// hup makes the agent reload its plan.
func (n *node) hup() {
	if err := n.agent.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		n.c.t.Fatalf("SIGHUP %s: %v", n.name, err)
	}
}

// log is everything the agent logged, over all its runs.
func (n *node) log() string {
	if n.agent == nil {
		return n.logs
	}
	return n.logs + n.agent.ErrOut.String()
}

// path is p under the agent's mount, as the test reaches it.
func (n *node) path(p string) string { return n.h.Path(filepath.Join(n.mount, p)) }

// run runs a command in the node's host to completion.
func (n *node) run(name string, args ...string) string {
	n.c.t.Helper()
	return n.h.Run(n.c.t, name, args...)
}

// stat reads one counter of a channel's stats file.
func (n *node) stat(ch, key string) uint64 {
	n.c.t.Helper()
	p, err := chanfile.ReadFile(filepath.Join(n.path(ch), chanfile.Stats))
	if err != nil {
		n.c.t.Fatalf("%s: %v", n.name, err)
	}
	v, err := strconv.ParseUint(p.Map()[key], 10, 64)
	if err != nil {
		n.c.t.Fatalf("%s: stats %s of %s: %v", n.name, key, ch, err)
	}
	return v
}

// link is a row of shimmy stat --links.
type link struct {
	state                string
	messages, reconnects uint64
	lag, losses          uint64
}

// links runs shimmy stat --links in the host, by peer.
func (n *node) links() map[string]link {
	n.c.t.Helper()
	out := n.run(shimmyBin, "stat", "--links", "--metrics", "127.0.0.1:9477")
	ls := map[string]link{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) != 8 {
			continue // "no mirror links"
		}
		num := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		ls[f[0]] = link{state: f[1], messages: num(3), lag: num(4), reconnects: num(6), losses: num(7)}
	}
	return ls
}

// member starts the pod helper in the node's host on channel ch (a path
// under the mount) with the given flags.
func (n *node) member(ch string, flags ...string) *netnstest.Proc {
	n.c.t.Helper()
	p := n.h.Start(n.c.t, podBin, append([]string{"-dir", filepath.Join(n.mount, ch), "-timeout", "90s"}, flags...)...)
	p.WaitLine(n.c.t, "ready", 30*time.Second)
	return p
}

// result waits for a pod helper and returns its result.
func result(t *testing.T, who string, p *netnstest.Proc) member.Result {
	t.Helper()
	err := p.Wait(t, 2*time.Minute)
	r, perr := member.ParseResult(p.Out.String())
	if perr != nil || err != nil || r.Error != "" {
		t.Fatalf("%s: %v %v %s (stderr %q)", who, err, perr, r.Error, tail(p.ErrOut.String(), 10))
	}
	return r
}

// checkRun checks that r is n messages from start, in order, intact.
func checkRun(t *testing.T, who string, r member.Result, start, n, size int) {
	t.Helper()
	if r.Count != n || !r.InOrder || r.Corrupt != 0 || r.Fnv != member.Fnv(start, n, size) {
		t.Errorf("%s: %d messages (want %d), in order %v, %d corrupt, fnv %#x (want %#x), first %q last %q",
			who, r.Count, n, r.InOrder, r.Corrupt, r.Fnv, member.Fnv(start, n, size), r.First, r.Last)
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
