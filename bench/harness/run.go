// Package harness reproduces the evaluation of the Shimmy paper (HotEdge
// '19) on this machine: Shimmy through mmap (copying and zero-copy) and
// through the agent's data files, against real Mosquitto, NATS and Redis
// servers and the kernel's Unix and TCP sockets. Every publisher,
// subscriber and server is a process of its own; every message carries a
// sequence number, a CLOCK_MONOTONIC send time and a checksum that the
// subscriber verifies. Run writes results.md, results.csv, results.json
// and PNG plots; docs/benchmarks.md describes the method.
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/registry"
	"github.com/shimmy-dev/shimmy/shm"
)

// System names.
const (
	SysShimmyZeroCopy = "shimmy-mmap-zerocopy"
	SysShimmyCopy     = "shimmy-mmap-copy"
	SysShimmyBusy     = "shimmy-mmap-busy" // zero-copy, busy-polling subscriber
	SysShimmyFiles    = "shimmy-files"
	SysUnix           = "unix-socket"
	SysTCP            = "tcp-loopback"
	SysNATS           = "nats"
	SysRedis          = "redis"
	SysMosquitto      = "mosquitto"
	SysKafka          = "kafka"
	// The C peers (bench/harness/peer): a sleeping subscriber (blocked in
	// the library's wait) and a busy-polling one.
	SysIceoryx     = "iceoryx"
	SysIceoryxBusy = "iceoryx-busy"
	SysMQ          = "posix-mq"
	SysMQBusy      = "posix-mq-busy"
	SysZMQ         = "zeromq"
	SysZMQBusy     = "zeromq-busy"
)

// Options configure Run.
type Options struct {
	Quick   bool     // about a minute: fewer sizes and counts, short caps
	OutDir  string   // default bench/results/<YYYY-MM-DD>
	Systems []string // run only these (names or substrings); empty: all
	// Cases runs only the cases whose name (as printed, e.g.
	// "throughput size=16B count=1M subs=1 rate=max") contains one of
	// these substrings; empty: all.
	Cases []string
	// Agent starts (or finds) a shimmy agent and returns its mount, for
	// the data-file cases; nil skips them with a note.
	Agent func(ctx context.Context) (mount string, stop func(), err error)
	// AgentPID is the agent's process, for its CPU time; 0 means the agent
	// runs inside this process, whose own CPU time is then counted as the
	// agent's.
	AgentPID int
	Progress io.Writer // per-case lines; nil: os.Stderr
	// Rounds runs every selected system this many times, interleaved
	// (all systems once, then all again), and reports each case's median
	// round: a slow minute of a shared machine then hits every system
	// alike instead of one. 0 or 1: one round.
	Rounds int
	// Remote runs the remote cases (remote.go) instead of the local ones:
	// publisher and subscriber on two hosts joined by veth. Needs root,
	// unshare, nsenter and ip.
	Remote bool
	// Shimmy is the shimmy binary the remote cases run as each host's
	// agent; default "shimmy" beside this program's executable, else in
	// PATH.
	Shimmy string
}

// Usage describes the benchmark for `shimmy-bench --help` (the flags
// themselves are the command's).
func Usage() string {
	return `Runs the Shimmy paper's evaluation on this machine: one publisher to one
and to four subscribers, messages of 16 B, 4 KiB and 100 KB, 10 K to 1 M
messages, for
  ` + strings.Join(allSystems(), ", ") + `
each publisher, subscriber and broker in a process of its own. Reports
throughput at the subscriber (msgs/s, MB/s), one-way latency (mean,
median, p99, p99.9) at saturation and at a fixed offered rate, and CPU
time per message of every process involved, brokers included. Every
message is verified (sequence and CRC-32C); a run that lost or corrupted
messages is marked so, not reported as fast.

Needs the brokers and the C peers' libraries installed (make bench-deps:
apt-get install -y mosquitto nats-server redis-server gcc libc6-dev
iceoryx libiceoryx-binding-c-dev libzmq3-dev); missing ones are skipped
and named. --rounds N runs every system N times, interleaved, and reports
each case's median round. --remote runs the remote cases instead:
publisher on host a, subscriber on host b (network namespaces joined by
veth), Shimmy's mirror between two shimmy agents against plain TCP and
NATS and Mosquitto running on host a, 16 B and 100 KB.
Writes results.md, results.csv, results.json and PNG plots to the results
directory.`
}

func allSystems() []string {
	var names []string
	for _, s := range systems {
		names = append(names, s.name)
	}
	return append(names, SysKafka)
}

// system is one row kind of the results.
type system struct {
	name   string
	server func(ctx context.Context, at place, dir string, cases []Case) (*server, error)
	pkg    string // Debian package that provides the server
	batch  int    // pipelined clients: messages per round trip at saturation
	broker bool
	peer   *peer // a C client, compiled by the harness, runs the children
	remote bool  // publisher and subscriber on two hosts (--remote)
}

var systems = []system{
	{name: SysShimmyZeroCopy},
	{name: SysShimmyBusy},
	{name: SysShimmyCopy},
	{name: SysShimmyFiles},
	{name: SysIceoryx, peer: peerIceoryx, server: startRouDi},
	{name: SysIceoryxBusy, peer: peerIceoryx, server: startRouDi},
	{name: SysMQ, peer: peerMQ},
	{name: SysMQBusy, peer: peerMQ},
	{name: SysZMQ, peer: peerZMQ},
	{name: SysZMQBusy, peer: peerZMQ},
	{name: SysUnix},
	{name: SysTCP},
	{name: SysNATS, server: startNATS, pkg: "nats-server", broker: true},
	{name: SysRedis, server: startRedis, pkg: "redis-server", batch: 64, broker: true},
	{name: SysMosquitto, server: startMosquitto, pkg: "mosquitto", broker: true},
	{name: SysMirror, remote: true},
	{name: SysRemoteTCP, remote: true},
	{name: SysRemoteNATS, server: startNATS, pkg: "nats-server", broker: true, remote: true},
	{name: SysRemoteMosquitto, server: startMosquitto, pkg: "mosquitto", broker: true, remote: true},
}

// Case is one measurement.
type Case struct {
	Mode  string  `json:"mode"` // "throughput" (saturation) or "latency" (fixed rate)
	Size  int     `json:"size"`
	Count int     `json:"count"`
	Subs  int     `json:"subs"`
	Rate  float64 `json:"rate"` // offered msgs/s; 0 = as fast as possible
}

func (c Case) String() string {
	r := "max"
	if c.Rate > 0 {
		r = fmt.Sprintf("%.0f/s", c.Rate)
	}
	return fmt.Sprintf("%s size=%s count=%s subs=%d rate=%s", c.Mode, sizeName(c.Size), countName(c.Count), c.Subs, r)
}

// plan lists the cases of a run, and the time cap of one case.
func plan(quick bool) ([]Case, time.Duration) {
	var cs []Case
	sizes, counts, cap := []int{16, 4096, 100_000}, []int{10_000, 100_000, 1_000_000}, 8*time.Second
	latCount := 10_000
	if quick {
		sizes, counts, cap, latCount = []int{16, 100_000}, []int{10_000}, time.Second, 500
	}
	for _, subs := range []int{1, 4} {
		for _, size := range sizes {
			for _, n := range counts {
				cs = append(cs, Case{Mode: "throughput", Size: size, Count: n, Subs: subs})
			}
		}
	}
	for _, subs := range []int{1, 4} {
		for _, size := range sizes {
			if quick && subs > 1 {
				continue
			}
			cs = append(cs, Case{Mode: "latency", Size: size, Count: latCount, Subs: subs, Rate: latencyRate(size)})
		}
	}
	return cs, cap
}

// latencyRate is the fixed offered rate of the latency cases: below what
// every system here sustains (the slowest, Mosquitto and the data files,
// manage tens of thousands of small messages a second).
func latencyRate(size int) float64 {
	if size >= 64<<10 {
		return 1000
	}
	return 5000
}

func sizeName(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0 && n%1024 != 0:
		return fmt.Sprintf("%dKB", n/1000)
	case n >= 1024 && n%1024 == 0:
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func countName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dK", n/1000)
	}
	return fmt.Sprint(n)
}

func selected(name string, filter []string) bool {
	if len(filter) == 0 {
		return true
	}
	for _, f := range filter {
		if f = strings.TrimSpace(f); f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// filterCases keeps the cases whose name contains one of filter (all
// when filter is empty).
func filterCases(cs []Case, filter []string) []Case {
	var out []Case
	for _, c := range cs {
		if selected(c.String(), filter) {
			out = append(out, c)
		}
	}
	return out
}

// Run runs the benchmark and writes its results to opts.OutDir.
func Run(ctx context.Context, opts Options) error {
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	if opts.OutDir == "" {
		opts.OutDir = filepath.Join("bench", "results", time.Now().Format("2006-01-02"))
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	tmp, err := os.MkdirTemp("", "shimmy-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(tmp)
	cases, capDur := plan(opts.Quick)
	if opts.Remote {
		cases, capDur = remotePlan(opts.Quick)
	}
	cases = filterCases(cases, opts.Cases)
	if len(cases) == 0 {
		return fmt.Errorf("bench: no case matches %q", strings.Join(opts.Cases, ","))
	}
	rep := &Report{Started: time.Now(), Quick: opts.Quick, Remote: opts.Remote, Machine: machineInfo(), CaseCap: capDur.String(), LoadStart: loadAvg()}
	logf := func(format string, a ...any) { fmt.Fprintf(opts.Progress, format+"\n", a...) }
	logf("shimmy-bench: %d cases per system, each capped at %v; results in %s", len(cases), capDur, opts.OutDir)
	var rh *remote
	if opts.Remote {
		if rh, err = newRemote(tmp, opts.Shimmy); err != nil {
			return fmt.Errorf("bench: remote hosts: %w", err)
		}
		defer rh.close()
		logf("remote hosts: a %s (publisher, brokers), b %s (subscriber), joined by veth through a bridge", rh.a.IP, rh.b.IP)
	}
	rounds := max(1, opts.Rounds)
	var all []Result
	for round := 1; round <= rounds; round++ {
		if rounds > 1 {
			logf("round %d of %d", round, rounds)
		}
		for _, sys := range systems {
			if sys.remote != opts.Remote || !selected(sys.name, opts.Systems) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			all = append(all, runSystem(ctx, sys, cases, capDur, tmp, rh, opts, logf)...)
		}
	}
	rep.Rounds = rounds
	rep.Results = medianRounds(all)
	if !opts.Remote && selected(SysKafka, opts.Systems) {
		note := "not packaged in Debian 12: not run here. Paper figures not available here (the paper's text could not be consulted from this machine)."
		rep.Notes = append(rep.Notes, "kafka: "+note)
		rep.Results = append(rep.Results, Result{System: SysKafka, Case: Case{Mode: "throughput"}, Status: StatusPaper, Note: note})
		logf("%-22s %s", SysKafka, note)
	}
	rep.Finished = time.Now()
	rep.LoadEnd = loadAvg()
	if err := rep.write(opts.OutDir); err != nil {
		return err
	}
	if err := rep.plot(opts.OutDir); err != nil {
		logf("plots: %v", err)
		rep.Notes = append(rep.Notes, "plots failed: "+err.Error())
	}
	logf("wrote %s", filepath.Join(opts.OutDir, "results.md"))
	return nil
}

// runSystem runs every case of one system, starting and stopping its
// server or agent around them.
func runSystem(ctx context.Context, sys system, cases []Case, capDur time.Duration, tmp string, rh *remote, opts Options, logf func(string, ...any)) []Result {
	skip := func(why string) []Result {
		logf("%-22s SKIPPED: %s", sys.name, why)
		var rs []Result
		for _, c := range cases {
			rs = append(rs, Result{System: sys.name, Case: c, Status: StatusSkipped, Note: why})
		}
		return rs
	}
	env := &sysEnv{sys: sys, tmp: tmp}
	if sys.remote {
		env.pub, env.sub = place{rh.a}, place{rh.b}
	}
	if sys.peer != nil {
		exe, err := sys.peer.build(tmp)
		if err != nil {
			return skip(err.Error())
		}
		env.exe = exe
	}
	if sys.peer == peerMQ {
		maxSize := 0
		for _, c := range cases {
			maxSize = max(maxSize, c.Size)
		}
		changed, err := raiseMQLimits(maxSize)
		if err != nil {
			return skip(err.Error())
		}
		if changed != "" {
			logf("%-22s raised %s", sys.name, changed)
		}
	}
	if sys.server != nil {
		dir, err := os.MkdirTemp(tmp, sys.name+"-")
		if err != nil {
			return skip(err.Error())
		}
		srv, err := sys.server(ctx, env.pub, dir, cases)
		if err != nil {
			hint := ""
			if _, ferr := findBinary(sys.pkg); ferr != nil {
				hint = fmt.Sprintf(" (install it: apt-get install -y %s, or make bench-deps)", sys.pkg)
			}
			return skip(err.Error() + hint)
		}
		defer srv.stop()
		env.srv = srv
	}
	if sys.name == SysShimmyFiles {
		if opts.Agent == nil {
			return skip("no shimmy agent: run through `shimmy-bench`, which starts one, for the data-file cases")
		}
		mount, stop, err := opts.Agent(ctx)
		if err != nil {
			return skip(fmt.Sprintf("shimmy agent: %v", err))
		}
		defer stop()
		env.mount = mount
		env.agentPID = opts.AgentPID
	}
	if sys.name == SysMirror {
		setup, stop, err := rh.startMirror(ctx)
		if err != nil {
			return skip(fmt.Sprintf("shimmy agents: %v", err))
		}
		defer stop()
		env.mirror = setup
	}
	var rs []Result
	for i, c := range cases {
		if ctx.Err() != nil {
			break
		}
		r := env.repeated(ctx, c, capDur, i, env.runCase(ctx, c, capDur, i))
		rs = append(rs, r)
		logf("%s", r.progressLine())
	}
	return rs
}

// Short throughput runs are the noisiest on a shared machine (a run of a
// million 16-byte messages through the ring lasts a few tens of
// milliseconds, one hiccup of the host long): a throughput case that
// completed in under repeatBelow is run repeats times in all and its
// median run (by msgs/s) reported, with every run's rate in the note and
// in Runs. A run that lost or corrupted messages, or failed, is reported
// instead of the median: no better run hides it.
const (
	repeats     = 3
	repeatBelow = time.Second
)

func (e *sysEnv) repeated(ctx context.Context, c Case, capDur time.Duration, id int, first Result) Result {
	if c.Mode != "throughput" || first.Status != StatusOK || first.Elapsed >= repeatBelow.Seconds() {
		return first
	}
	runs := []Result{first}
	for len(runs) < repeats && ctx.Err() == nil {
		r := e.runCase(ctx, c, capDur, id)
		if r.Status != StatusOK && r.Status != StatusPartial {
			r.Note = strings.TrimSpace(fmt.Sprintf("run %d of %d: %s", len(runs)+1, repeats, r.Note))
			return r
		}
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].MsgsPerSec < runs[j].MsgsPerSec })
	m := runs[len(runs)/2]
	var rates []string
	for _, r := range runs {
		m.Runs = append(m.Runs, r.MsgsPerSec)
		rates = append(rates, siFmt(r.MsgsPerSec))
	}
	note := fmt.Sprintf("median of %d runs (msgs/s: %s)", len(runs), strings.Join(rates, ", "))
	if m.Note != "" {
		note += "; " + m.Note
	}
	m.Note = note
	return m
}

// sysEnv is what the cases of one system share.
type sysEnv struct {
	sys      system
	exe      string // the children's program: a C peer's, or "" for this binary
	tmp      string
	srv      *server
	mount    string
	agentPID int
	pub, sub place       // where the publisher and the subscribers run
	mirror   mirrorSetup // shimmy-mirror: the ring on each host, the agents
}

// prepare makes what one case needs before its clients start: a ring, a
// channel directory, a socket path or a topic. cleanup undoes it.
func (e *sysEnv) prepare(c Case, id int) (addr, topic string, cleanup func(), err error) {
	name := fmt.Sprintf("shimmy-bench-%d-%d", os.Getpid(), id)
	topic = fmt.Sprintf("bench.%d.%d", os.Getpid(), id)
	cleanup = func() {}
	switch e.sys.name {
	case SysShimmyZeroCopy, SysShimmyBusy, SysShimmyCopy:
		cfg := ringConfig().WithDefaults()
		seg, err := shm.CreatePOSIX(name, shm.RoundUp(cfg.Size()), shm.Options{Exclusive: true})
		if err != nil {
			return "", "", nil, err
		}
		r, err := channel.Format(seg.Bytes(), cfg)
		if err != nil {
			seg.Close()
			seg.Remove()
			return "", "", nil, err
		}
		r.Close()
		return seg.Path(), topic, func() { seg.Close(); seg.Remove() }, nil
	case SysShimmyFiles:
		ns := filepath.Join(e.mount, "bench")
		if err := os.Mkdir(ns, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", "", nil, err
		}
		dir := filepath.Join(ns, fmt.Sprintf("c%d-%d", os.Getpid(), id))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", "", nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, chanfile.Ctl), ringCtl(), 0); err != nil {
			os.Remove(dir)
			return "", "", nil, fmt.Errorf("configure %s: %w", dir, err)
		}
		return dir, topic, func() { os.Remove(dir) }, nil
	case SysMirror:
		return e.mirror.pubRing, topic, cleanup, nil
	case SysRemoteTCP:
		return e.pub.ip() + ":0", topic, cleanup, nil
	case SysUnix:
		p := filepath.Join(e.tmp, fmt.Sprintf("s%d.sock", id))
		return p, topic, func() { os.Remove(p) }, nil
	case SysTCP:
		return "", topic, cleanup, nil
	case SysMQ, SysMQBusy:
		return name, topic, cleanup, nil // the publisher makes /<name>-<subscriber>
	case SysZMQ, SysZMQBusy:
		p := filepath.Join(e.tmp, fmt.Sprintf("z%d.ipc", id))
		return p, topic, func() { os.Remove(p) }, nil
	case SysIceoryx, SysIceoryxBusy:
		return name, topic, cleanup, nil // the service's instance
	}
	return e.srv.addr, topic, cleanup, nil
}

// ringConfig is the channel of the Shimmy cases: block policy (lossless),
// 4 MiB of ring, room for 100 KB messages.
func ringConfig() channel.Config {
	return channel.Config{Capacity: 4 << 20, MaxMessage: 128 << 10, Policy: channel.PolicyBlock}
}

// ringCtl configures a channel of an agent as ringConfig, through its ctl
// file.
func ringCtl() []byte {
	cfg := ringConfig()
	return chanfile.FormatCtl(registry.Change{Policy: &cfg.Policy, Capacity: &cfg.Capacity, MaxMessage: &cfg.MaxMessage})
}

// clockEvery is how often the clock is read, in messages, on both sides:
// every message at a fixed rate (the latency figures to compare); every
// 16th at saturation, where two reads of the clock (about 25 ns each
// here) per message would be a good part of what the fastest systems
// spend on one. Every message is verified either way; latency at
// saturation is then a 1-in-16 sample, and throughput is measured up to
// the last timed message.
func clockEvery(c Case) int {
	if c.Rate > 0 {
		return 1
	}
	return 16
}

// window is how far the publisher may run ahead of the slowest subscriber,
// for every system alike: the brokers buffer without limit otherwise (and
// at QoS 0 would drop or run out of memory), and it bounds the queueing
// that latency at saturation includes.
func window(size int) int { return max(64, min(100_000, (16<<20)/size)) }

// child is a running publisher or subscriber process.
type child struct {
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	errb  *syncbuf.Buffer
	done  chan struct{}
}

// startChild starts exe (this binary when "") in spec's role, at a place.
func startChild(ctx context.Context, at place, exe, name string, spec childSpec) (*child, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	b, _ := json.Marshal(spec)
	cmd := at.command(exe)
	cmd.Env = append(os.Environ(), envChild+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, in: in, lines: make(chan string, 16), errb: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = c.errb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(c.errb, " (%v)", err) // how it ended, for the error
		}
		close(c.lines)
		close(c.done)
	}()
	return c, nil
}

// expect waits for a line with prefix and returns the rest of it.
func (c *child) expect(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s exited before %s: %s", c.name, prefix, strings.TrimSpace(c.errb.String()))
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return strings.TrimSpace(rest), nil
			}
			if rest, found := strings.CutPrefix(l, "RESULT "); found {
				var r childResult
				if json.Unmarshal([]byte(rest), &r) == nil && r.Err != "" {
					return "", fmt.Errorf("%s: %s", c.name, r.Err)
				}
			}
		case <-t.C:
			return "", fmt.Errorf("%s: no %s within %v: %s", c.name, prefix, timeout, strings.TrimSpace(c.errb.String()))
		}
	}
}

func (c *child) result(timeout time.Duration) (childResult, error) {
	var r childResult
	s, err := c.expect("RESULT ", timeout)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return r, fmt.Errorf("%s: bad result %q: %w", c.name, s, err)
	}
	return r, nil
}

func (c *child) send(line string) { io.WriteString(c.in, line+"\n") }

func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

// runCase runs one case: subscribers join, the publisher sends, the
// harness waits for every subscriber to have every message (or for
// progress to stop), then gathers counts, samples and CPU times.
func (e *sysEnv) runCase(ctx context.Context, c Case, capDur time.Duration, id int) Result {
	res := Result{System: e.sys.name, Case: c}
	fail := func(err error) Result {
		res.Status = StatusError
		res.Note = err.Error()
		return res
	}
	addr, topic, cleanup, err := e.prepare(c, id)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	ctlPath := filepath.Join(e.tmp, fmt.Sprintf("ctl-%d", id))
	ctl, err := openCtl(ctlPath, c.Subs, true)
	if err != nil {
		return fail(err)
	}
	defer func() { ctl.close(); os.Remove(ctlPath) }()
	spec := childSpec{System: e.sys.name, Addr: addr, Topic: topic, Size: c.Size, Count: c.Count, Rate: c.Rate,
		Deadline: capDur, Window: window(c.Size), Batch: e.sys.batch, Subs: c.Subs, Ctl: ctlPath, Every: clockEvery(c)}
	if c.Rate > 0 {
		spec.Batch = 1
		// A fixed-rate case is not capped below its planned duration.
		spec.Deadline = max(capDur, time.Duration(float64(c.Count)/c.Rate*1.5*float64(time.Second)))
	}
	var all []*child
	defer func() {
		for _, ch := range all {
			ch.in.Close()
			select {
			case <-ch.done:
			case <-time.After(3 * time.Second):
				ch.kill()
			}
		}
	}()
	ps := spec
	ps.Role = "pub"
	pub, err := startChild(ctx, e.pub, e.exe, "publisher", ps)
	if err != nil {
		return fail(err)
	}
	all = append(all, pub)
	paddr, err := pub.expect("READY", 15*time.Second)
	if err != nil {
		return fail(err)
	}
	var subs []*child
	for i := 0; i < c.Subs; i++ {
		ss := spec
		ss.Role, ss.Index = "sub", i
		ss.Samples = filepath.Join(e.tmp, fmt.Sprintf("lat-%d-%d", id, i))
		defer os.Remove(ss.Samples)
		if paddr != "" {
			ss.Addr = paddr
		}
		if e.sys.name == SysMirror {
			ss.Addr = e.mirror.subRing
		}
		sc, err := startChild(ctx, e.sub, e.exe, fmt.Sprintf("subscriber %d", i), ss)
		if err != nil {
			return fail(err)
		}
		all = append(all, sc)
		subs = append(subs, sc)
		if _, err := sc.expect("READY", 15*time.Second); err != nil {
			return fail(err)
		}
	}
	srv0, agent0 := e.serverCPU(), e.agentCPU()
	pub.send("GO")
	pr, err := pub.result(spec.Deadline + 60*time.Second)
	if err != nil {
		return fail(err)
	}
	// Wait for the subscribers to have all that was sent, while they make
	// progress.
	last, lastMove := uint64(0), time.Now()
	for {
		low := ctl.minReceived(c.Subs)
		if low >= uint64(pr.Sent) {
			break
		}
		if low != last {
			last, lastMove = low, time.Now()
		} else if time.Since(lastMove) > 3*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	srv1, agent1 := e.serverCPU(), e.agentCPU()
	var srs []childResult
	var samples [][]int64
	for i, sc := range subs {
		sc.send("STOP")
		r, err := sc.result(10 * time.Second)
		if err != nil {
			return fail(err)
		}
		srs = append(srs, r)
		s, err := readSamples(filepath.Join(e.tmp, fmt.Sprintf("lat-%d-%d", id, i)))
		if err != nil {
			return fail(err)
		}
		samples = append(samples, s)
	}
	res.fill(pr, srs, samples, srv1-srv0, agent1-agent0)
	return res
}

func (e *sysEnv) serverCPU() int64 {
	if e.srv == nil {
		return 0
	}
	n, _ := procCPU(e.srv.pid())
	return n
}

// agentCPU is the agent's CPU time: its process's, or this process's when
// the agent runs inside it (the harness itself only waits meanwhile).
func (e *sysEnv) agentCPU() int64 {
	if len(e.mirror.pids) > 0 {
		var sum int64
		for _, pid := range e.mirror.pids {
			n, _ := procCPU(pid)
			sum += n
		}
		return sum
	}
	if e.mount == "" {
		return 0
	}
	if e.agentPID > 0 {
		n, _ := procCPU(e.agentPID)
		return n
	}
	return cpuSelf()
}

var machineOnce sync.Once
var machine Machine

// Machine describes where the benchmark ran.
type Machine struct {
	CPU     string `json:"cpu"`
	Cores   int    `json:"cores"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Servers map[string]string
}

func machineInfo() Machine {
	machineOnce.Do(func() {
		machine.Servers = map[string]string{}
		if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
					machine.CPU = strings.TrimSpace(v)
				}
				if strings.HasPrefix(l, "processor") {
					machine.Cores++
				}
			}
		}
		if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
			machine.Kernel = strings.TrimSpace(string(b))
		}
		machine.Go = goVersion()
		for name, args := range map[string][]string{"mosquitto": {"-h"}, "nats-server": {"--version"}, "redis-server": {"--version"}} {
			bin, err := findBinary(name)
			if err != nil {
				machine.Servers[name] = "not installed"
				continue
			}
			out, _ := exec.Command(bin, args...).CombinedOutput()
			line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			machine.Servers[name] = strings.TrimSpace(line)
		}
	})
	return machine
}
