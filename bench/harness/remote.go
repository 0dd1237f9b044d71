package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/internal/nethost"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/mirror"
	"github.com/shimmy-dev/shimmy/mountpoint"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// The remote cases (--remote) put the publisher and the subscriber on two
// hosts: network, mount and IPC namespaces joined by veth pairs through a
// bridge (internal/nethost), as the end-to-end tests of remote channels
// run them. The publisher runs on host a, the subscriber on host b, and
// between them:
//
//   - shimmy-mirror: a real `shimmy agent` on each host with the mirror
//     (mutual TLS over rdma/tcp); the publisher writes zero-copy into a's
//     ring through a's mount, a's mirror carries it to b's ring, and the
//     subscriber reads b's ring in place through b's mount;
//   - tcp-remote: the publisher listens on a's address and writes the
//     length-prefixed messages, buffered, to the subscriber's connection:
//     plain TCP, the kernel's floor;
//   - nats-remote, mosquitto-remote: the broker runs on host a, beside the
//     publisher (as in the paper), and the subscriber on b reaches it
//     across the link.
//
// The processes of both hosts share this machine's CLOCK_MONOTONIC (there
// is no time namespace), so one-way latency is measured as on one host.
// The control file of every case (the counters the publisher's window
// reads) is in the harness's temporary directory, which both hosts see.
const (
	SysMirror          = "shimmy-mirror"
	SysRemoteTCP       = "tcp-remote"
	SysRemoteNATS      = "nats-remote"
	SysRemoteMosquitto = "mosquitto-remote"
)

// remotePlan lists the remote cases: 16 B and 100 KB, one subscriber,
// throughput at saturation and latency at a fixed rate.
func remotePlan(quick bool) ([]Case, time.Duration) {
	small, large, lat, capDur := 1_000_000, 20_000, 10_000, 8*time.Second
	if quick {
		small, large, lat, capDur = 100_000, 2_000, 500, 2*time.Second
	}
	return []Case{
		{Mode: "throughput", Size: 16, Count: small, Subs: 1},
		{Mode: "throughput", Size: 100_000, Count: large, Subs: 1},
		{Mode: "latency", Size: 16, Count: lat, Subs: 1, Rate: latencyRate(16)},
		{Mode: "latency", Size: 100_000, Count: lat, Subs: 1, Rate: latencyRate(100_000)},
	}, capDur
}

// remote is the two hosts of the remote cases, made once per run.
type remote struct {
	net    *nethost.Network
	a, b   *nethost.Host
	dir    string // TLS directories, plans and mount points
	shimmy string // the shimmy binary the agents run
}

// remoteHosts names the hosts: a publishes, b subscribes.
var remoteHosts = []string{"a", "b"}

func newRemote(tmp, shimmyBin string) (*remote, error) {
	n, err := nethost.New(remoteHosts...)
	if err != nil {
		return nil, err
	}
	r := &remote{net: n, a: n.Host("a"), b: n.Host("b"), dir: filepath.Join(tmp, "remote"), shimmy: shimmyBin}
	if err := r.writeCerts(); err != nil {
		n.Close()
		return nil, err
	}
	return r, nil
}

func (r *remote) close() { r.net.Close() }

// writeCerts makes a CA and each host's TLS directory.
func (r *remote) writeCerts() error {
	ca, err := certs.NewCA(certs.Options{Name: "shimmy-bench-ca"})
	if err != nil {
		return err
	}
	for _, h := range remoteHosts {
		node, err := ca.Issue(certs.Options{Name: h})
		if err != nil {
			return err
		}
		if err := certs.WriteNode(filepath.Join(r.dir, h, "tls"), node, ca); err != nil {
			return err
		}
	}
	return nil
}

// findShimmy resolves the shimmy binary: bin if set, else "shimmy"
// beside this program's executable (bin/ after make build), else in PATH.
func findShimmy(bin string) (string, error) {
	if bin != "" {
		return exec.LookPath(bin)
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "shimmy")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("shimmy"); err == nil {
		return p, nil
	}
	return "", errors.New("no shimmy binary beside shimmy-bench or in PATH (make build, or --shimmy PATH)")
}

// mirrorPort is where each agent accepts mirror links.
const mirrorPort = 7470

// mirrorChannel is the channel of the shimmy-mirror cases, shared by a
// and b. Every case uses it: a subscriber starts at the newest message,
// after the previous case's.
var mirrorChannel = [2]string{"bench", "mirror"}

// remoteAgent is a shimmy agent running on a host.
type remoteAgent struct {
	host  *nethost.Host
	mount string // as the host sees it
	plan  string
	cmd   *exec.Cmd
	out   *syncbuf.Buffer
	done  chan struct{}
}

// mirrorSetup is what the shimmy-mirror cases run on.
type mirrorSetup struct {
	pubRing, subRing string // the channel's ring file on a and on b, as each host sees it
	pids             []int  // the agents, for their CPU time
}

// startMirror runs an agent on each host, makes the channel on both,
// shares it in their plans and waits until a probe published on a has
// reached b. stop ends the agents.
func (r *remote) startMirror(ctx context.Context) (mirrorSetup, func(), error) {
	var setup mirrorSetup
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return setup, nil, fmt.Errorf("the agents need /dev/fuse: %w", err)
	}
	bin, err := findShimmy(r.shimmy)
	if err != nil {
		return setup, nil, err
	}
	r.shimmy = bin
	var agents []*remoteAgent
	stop := func() {
		for _, ag := range agents {
			ag.stop()
		}
	}
	fail := func(err error) (mirrorSetup, func(), error) {
		stop()
		return setup, nil, err
	}
	for _, h := range []*nethost.Host{r.a, r.b} {
		ag, err := r.startAgent(ctx, h)
		if err != nil {
			return fail(err)
		}
		agents = append(agents, ag)
		setup.pids = append(setup.pids, ag.cmd.Process.Pid)
	}
	chDir := filepath.Join(mirrorChannel[0], mirrorChannel[1])
	for _, ag := range agents {
		if err := makeChannel(ag.host.Path(filepath.Join(ag.mount, chDir))); err != nil {
			return fail(fmt.Errorf("%s: %w", ag.host.Name, err))
		}
		if err := r.writePlan(ag, true); err != nil {
			return fail(err)
		}
		ag.cmd.Process.Signal(syscall.SIGHUP)
	}
	if err := agents[0].probe(ctx, agents[1], chDir); err != nil {
		return fail(err)
	}
	setup.pubRing = filepath.Join(agents[0].mount, chDir, chanfile.Ring)
	setup.subRing = filepath.Join(agents[1].mount, chDir, chanfile.Ring)
	return setup, stop, nil
}

// writePlan writes the agent's plan: the other host as its peer, and the
// bench channel shared with it if share.
func (r *remote) writePlan(ag *remoteAgent, share bool) error {
	var p mirror.Plan
	for _, o := range []*nethost.Host{r.a, r.b} {
		if o == ag.host {
			continue
		}
		p.Peers = append(p.Peers, mirror.Peer{Name: o.Name, Addr: o.Addr(mirrorPort)})
		if share {
			p.Shares = append(p.Shares, mirror.Share{Namespace: mirrorChannel[0], Channel: mirrorChannel[1], Peers: []string{o.Name}})
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return os.WriteFile(ag.plan, b, 0o644)
}

// startAgent runs `shimmy agent` with a mirror on h and waits for its
// mount.
func (r *remote) startAgent(ctx context.Context, h *nethost.Host) (*remoteAgent, error) {
	base := filepath.Join(r.dir, h.Name)
	ag := &remoteAgent{host: h, mount: filepath.Join(base, "mnt"), plan: filepath.Join(base, "plan.json"),
		out: &syncbuf.Buffer{}, done: make(chan struct{})}
	if err := os.MkdirAll(ag.mount, 0o755); err != nil {
		return nil, err
	}
	if err := r.writePlan(ag, false); err != nil {
		return nil, err
	}
	args := []string{"agent", "--mount", ag.mount, "--state-dir", "/dev/shm/shimmy", "--metrics", "off",
		"--mirror-listen", h.Addr(mirrorPort), "--mirror-tls-dir", filepath.Join(base, "tls"), "--mirror-plan", ag.plan,
		"--log-level", "warn"}
	if dir := os.Getenv(envProfile); dir != "" {
		args = append(args, "--cpu-profile", filepath.Join(dir, fmt.Sprintf("agent-%s-%d.prof", h.Name, time.Now().UnixNano())))
	}
	ag.cmd = h.Command(r.shimmy, args...)
	ag.cmd.Stdout, ag.cmd.Stderr = ag.out, ag.out
	if err := ag.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shimmy agent on %s: %w", h.Name, err)
	}
	go func() { ag.cmd.Wait(); close(ag.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !ag.mounted() {
		select {
		case <-ag.done:
			return nil, fmt.Errorf("shimmy agent on %s exited: %s", h.Name, ag.out.String())
		case <-ctx.Done():
			ag.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ag.stop()
			return nil, fmt.Errorf("shimmy agent on %s: no mount within 30 s: %s", h.Name, ag.out.String())
		}
	}
	return ag, nil
}

// mounted reports whether the agent's FUSE mount is up in its host.
func (ag *remoteAgent) mounted() bool {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(ag.cmd.Process.Pid), "mountinfo"))
	if err != nil {
		return false
	}
	defer f.Close()
	ms, err := mountpoint.ParseMountInfo(f)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Point == ag.mount && m.FSType == mountpoint.FSType {
			_, err := os.ReadDir(ag.host.Path(ag.mount))
			return err == nil
		}
	}
	return false
}

// stop ends the agent (SIGTERM: it unmounts), killing it after 5 s.
func (ag *remoteAgent) stop() {
	ag.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ag.done:
	case <-time.After(5 * time.Second):
		ag.cmd.Process.Kill()
		<-ag.done
	}
}

// probe publishes a message into ch on ag's host through its pub file and
// waits until to's replica of ch has it: the mirror's flow is open.
func (ag *remoteAgent) probe(ctx context.Context, to *remoteAgent, ch string) error {
	stats := to.host.Path(filepath.Join(to.mount, ch, chanfile.Stats))
	count := func() uint64 {
		p, err := chanfile.ReadFile(stats)
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseUint(p.Map()["messages"], 10, 64)
		return n
	}
	before := count()
	if err := os.WriteFile(ag.host.Path(filepath.Join(ag.mount, ch, chanfile.Pub)), []byte("probe"), 0); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for count() <= before {
		if time.Now().After(deadline) {
			return fmt.Errorf("the mirror did not carry a probe from %s to %s within 60 s; agent logs: %s | %s",
				ag.host.Name, to.host.Name, ag.out.String(), to.out.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// makeChannel makes the channel directory dir on a mount with the ring
// of the Shimmy cases (ringConfig). A channel an earlier agent of the
// host made (its state directory keeps it) is used as it is.
func makeChannel(dir string) error {
	if err := os.Mkdir(filepath.Dir(dir), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, chanfile.Ctl), ringCtl(), 0); err != nil {
		os.Remove(dir)
		return fmt.Errorf("configure %s: %w", dir, err)
	}
	return nil
}
