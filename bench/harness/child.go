package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/heldsleep"
	"github.com/shimmy-dev/shimmy/internal/shmword"
)

// Every publisher and subscriber runs in a process of its own: the harness
// re-executes its own binary (cmd/shimmy-bench, or a test binary) with the
// role in envChild. That binary's main (or TestMain) calls Child first, so
// the role is chosen explicitly there and not by an init that every
// importer of this package would inherit. The child talks to the harness
// through lines: it prints "READY [addr]" when joined and "RESULT {json}"
// at the end; the publisher waits for "GO" on its stdin, a subscriber for
// "STOP" (or end of input) once the harness has seen every message arrive
// or given up waiting.
const envChild = "SHIMMY_BENCH_CHILD"

// Child runs the publisher or subscriber role this process was started
// for, if the harness started it, and returns the exit code and true; in
// any other process it returns false at once. Call it at the top of main
// and TestMain of every binary that runs the harness:
//
//	if code, ok := harness.Child(); ok {
//		os.Exit(code)
//	}
func Child() (code int, ok bool) {
	spec := os.Getenv(envChild)
	if spec == "" {
		return 0, false
	}
	return childMain(spec), true
}

// childSpec is what a child is told, as JSON in envChild.
type childSpec struct {
	Role     string        `json:"role"` // "pub" or "sub"
	System   string        `json:"system"`
	Addr     string        `json:"addr"`  // ring path, channel directory, socket or server address
	Topic    string        `json:"topic"` // subject, topic or channel name at a broker
	Size     int           `json:"size"`
	Count    int           `json:"count"`
	Rate     float64       `json:"rate"` // messages per second; 0: as fast as possible
	Deadline time.Duration `json:"deadline"`
	Window   int           `json:"window"` // most messages the publisher may be ahead of the slowest subscriber
	Batch    int           `json:"batch"`  // pipelined clients: messages per round trip
	Subs     int           `json:"subs"`
	Index    int           `json:"index"`   // subscriber number
	Ctl      string        `json:"ctl"`     // control file: progress counters
	Samples  string        `json:"samples"` // subscriber: where to write latency samples
	Every    int           `json:"every"`   // read the clock for every Every-th message (seq % Every == 0)
}

// childResult is what a child reports.
type childResult struct {
	Sent        int    `json:"sent,omitempty"`
	Received    int    `json:"received,omitempty"`
	Corrupt     int    `json:"corrupt,omitempty"`
	Gaps        int    `json:"gaps,omitempty"`      // messages skipped in the sequence
	Reordered   int    `json:"reordered,omitempty"` // duplicates or messages out of order
	FirstSendNs int64  `json:"first_send_ns,omitempty"`
	LastRecvNs  int64  `json:"last_recv_ns,omitempty"` // arrival of the last timed message
	TimedN      int    `json:"timed_n,omitempty"`      // messages received up to LastRecvNs
	StartNs     int64  `json:"start_ns,omitempty"`
	EndNs       int64  `json:"end_ns,omitempty"`
	CPUNs       int64  `json:"cpu_ns"`
	Err         string `json:"err,omitempty"`
	FirstErr    string `json:"first_err,omitempty"` // the first bad payload
}

// ctlFile holds one cache line per party: [0] messages sent; for
// subscriber i, line 1+i: messages received, the arrival time of the last
// timed one and how many had arrived then. Shared memory, so the harness
// and the publisher (for flow control) read it while the subscribers run,
// and a subscriber blocked in a receive that never returns has its tally
// read all the same.
type ctlFile struct {
	mem []byte
}

const ctlSlot = 64

func openCtl(path string, subs int, create bool) (*ctlFile, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := (1 + subs) * ctlSlot
	if create {
		if err := f.Truncate(int64(size)); err != nil {
			return nil, err
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	return &ctlFile{mem: mem}, nil
}

func (c *ctlFile) word(i int) *uint64 { return c.field(i, 0) }

// field returns word k of cache line i.
func (c *ctlFile) field(i, k int) *uint64 {
	return (*uint64)(unsafe.Pointer(&c.mem[i*ctlSlot+k*8]))
}
func (c *ctlFile) sent() uint64 { return atomic.LoadUint64(c.word(0)) }
func (c *ctlFile) received(i int) uint64 {
	return atomic.LoadUint64(c.word(1 + i))
}
func (c *ctlFile) minReceived(subs int) uint64 {
	m := ^uint64(0)
	for i := 0; i < subs; i++ {
		m = min(m, c.received(i))
	}
	return m
}
func (c *ctlFile) close() { unix.Munmap(c.mem) }

func cpuSelf() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// envProfile names a directory where every child writes a CPU profile
// (<role>-<system>-<pid>.prof): where a system's time goes, per process.
const envProfile = "SHIMMY_BENCH_CPUPROFILE"

func childMain(raw string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: bad spec: %v\n", err)
		return 2
	}
	if dir := os.Getenv(envProfile); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%s-%d.prof", s.Role, s.System, os.Getpid())))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, ok := dialers[s.System]
	if !ok {
		report(childResult{Err: "unknown system " + s.System})
		return 1
	}
	if s.Role == "sub" && d.subProcs > 0 {
		runtime.GOMAXPROCS(d.subProcs)
	}
	ctl, err := openCtl(s.Ctl, s.Subs, false)
	if err != nil {
		report(childResult{Err: err.Error()})
		return 1
	}
	codec, err := NewCodec(s.Size)
	if err != nil {
		report(childResult{Err: err.Error()})
		return 1
	}
	in := bufio.NewScanner(pollableStdin())
	if s.Role == "pub" {
		pc, addr, err := d.pub(ctx, s)
		if err != nil {
			report(childResult{Err: fmt.Sprintf("publisher: %v", err)})
			return 1
		}
		fmt.Printf("READY %s\n", addr)
		if !in.Scan() || strings.TrimSpace(in.Text()) != "GO" {
			pc.Close()
			return 1
		}
		res := publish(ctx, s, codec, pc, ctl)
		report(res)
		return 0
	}
	sc, err := d.sub(ctx, s)
	if err != nil {
		report(childResult{Err: fmt.Sprintf("subscriber: %v", err)})
		return 1
	}
	fmt.Println("READY")
	st := &subState{lat: make([]int64, s.Count/max(1, s.Every)+2), line: 1 + s.Index, ctl: ctl, cpu0: cpuSelf()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.run(ctx, s, codec, sc)
	}()
	stop := make(chan struct{})
	go func() {
		for in.Scan() {
			if strings.TrimSpace(in.Text()) == "STOP" {
				break
			}
		}
		close(stop)
	}()
	select {
	case <-done:
	case <-stop:
		cancel()
		// A client whose read ignores cancellation (a blocking read(2) on a
		// data file) stays blocked; the counters are atomics, so the
		// result can be taken without it.
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
		}
	}
	res := st.result()
	// The receiving goroutine may still run (blocked in a read that
	// ignores cancellation): take the samples it had published.
	n := int(st.timed.Load())
	if err := writeSamples(s.Samples, st.lat[:n]); err != nil && res.Err == "" {
		res.Err = err.Error()
	}
	report(res)
	return 0
}

// pollableStdin returns the harness's control pipe as a file that waits
// in the runtime's netpoller. A goroutine blocked in read(2) keeps its
// processor until sysmon takes it back, which on an idle process takes up
// to about 10 ms: with GOMAXPROCS=1 (the busy subscribers) the goroutine
// reading STOP held the only processor while the receive loop waited,
// and the first 50-60 messages of every run arrived 1-12 ms late (the
// busy 16 B case's p99.9 of 10-16 ms).
func pollableStdin() *os.File {
	if err := unix.SetNonblock(0, true); err != nil {
		return os.Stdin
	}
	return os.NewFile(0, "/dev/stdin")
}

// sleepUntil sleeps to the CLOCK_MONOTONIC time t (ns; nanotime's clock)
// with clock_nanosleep(TIMER_ABSTIME), as the C peers pace: time.Sleep
// wakes on the runtime's timer, about 1.08 ms here for any request from
// 50 µs to 900 µs, which made "5000/s" bursts of five messages every
// millisecond. An absolute deadline per message also keeps one late
// wake-up from shifting every message after it. The sleep holds the Go
// processor (internal/heldsleep): in an ordinary system call the
// runtime took it away, and getting it back woke sysmon on the other
// CPU at the very moment of publishing, which a Go publisher paid in its
// latency figures and a C one did not. As channel's sleepers do, it
// yields before a sleep every few milliseconds, so that the runtime never
// preempts the publishing goroutine (which otherwise never passes
// through the scheduler) in the middle of a message.
func sleepUntil(t int64) {
	if nanotime() < t {
		heldsleep.YieldIfDue(&lastYield)
	}
	heldsleep.Until(t)
}

// lastYield is when the publishing goroutine last yielded (sleepUntil).
var lastYield int64

func report(r childResult) {
	b, _ := json.Marshal(r)
	fmt.Printf("RESULT %s\n", b)
}

// publish sends s.Count messages, paced at s.Rate if set, never more than
// s.Window ahead of the slowest subscriber, and stops at s.Deadline.
func publish(ctx context.Context, s childSpec, codec *Codec, pc pubConn, ctl *ctlFile) childResult {
	cpu0 := cpuSelf()
	start := nanotime()
	deadline := start + int64(s.Deadline)
	var res childResult
	res.StartNs = start
	low := uint64(0) // the slowest subscriber's count, last seen
	var interval float64
	if s.Rate > 0 {
		interval = 1e9 / s.Rate
	}
	i := 0
	every := max(1, s.Every)
	var ts int64
	var filled *byte // the reused buffer whose filler is in place
	fail := func(err error) {
		if res.Err == "" {
			res.Err = err.Error()
		}
	}
loop:
	for ; i < s.Count; i++ {
		if interval > 0 {
			sleepUntil(start + int64(float64(i)*interval))
		}
		if i&255 == 0 && nanotime() > deadline {
			break
		}
		if uint64(i)-low >= uint64(s.Window) {
			if err := pc.Flush(ctx); err != nil {
				fail(err)
				break
			}
			for spins := 0; ; spins++ {
				low = ctl.minReceived(s.Subs)
				if uint64(i)-low < uint64(s.Window) {
					break
				}
				if nanotime() > deadline {
					break loop
				}
				if spins < 100 {
					continue
				}
				sleepUntil(nanotime() + 20_000)
			}
		}
		// Messages this one included that go out before the next flush
		// or wait: up to the count, the window, and the next deadline
		// check (every 256th message); one at a fixed rate.
		ahead := 1
		if interval == 0 {
			ahead = min(s.Count-i, s.Window-int(uint64(i)-low), 256-i&255)
		}
		buf, fresh, err := pc.Buf(ctx, ahead)
		if err != nil {
			fail(err)
			break
		}
		// Lay the filler first (a claimed frame is fresh memory; a reused
		// buffer keeps its filler), then stamp: the clock starts when the
		// message is ready to go, for every system alike. Stamping before
		// filling would charge a zero-copy publisher for building its
		// message while the others' buffers are built in advance.
		if fresh || len(buf) == 0 || &buf[0] != filled {
			codec.Encode(buf, uint32(i), 0)
			if !fresh && len(buf) > 0 {
				filled = &buf[0]
			}
		}
		if i%every == 0 {
			ts = nanotime()
		}
		codec.Stamp(buf, uint32(i), ts)
		if err := pc.Send(ctx); err != nil {
			fail(err)
			break
		}
		if interval > 0 {
			if err := pc.Flush(ctx); err != nil {
				fail(err)
				break
			}
		}
	}
	// Messages sent, once: a locked store per message would be a full
	// barrier on the publisher's path, which no system's client pays.
	atomic.StoreUint64(ctl.word(0), uint64(i))
	if err := pc.Close(); err != nil {
		fail(fmt.Errorf("close: %w", err))
	}
	res.Sent = i
	res.EndNs = nanotime()
	res.CPUNs = cpuSelf() - cpu0
	return res
}

// subState is a subscriber's running tally. What the harness reads
// while a Recv may block forever (messages received, the last timed
// arrival) is in the subscriber's line of the control file, stored with
// release stores: no locked instruction on the per-message path.
type subState struct {
	lat       []int64      // one-way latency of each timed message
	timed     atomic.Int64 // how many of lat are filled, published for the result
	line      int          // the subscriber's line in ctl
	ctl       *ctlFile
	corrupt   atomic.Int64
	gaps      atomic.Int64
	reordered atomic.Int64
	first     atomic.Int64
	cpu0      int64
	errMsg    atomic.Pointer[string]
	firstBad  atomic.Pointer[string]
}

// Fields of a subscriber's control line.
const (
	ctlReceived = 0 // messages received
	ctlLastRecv = 1 // arrival (ns) of the last timed message
	ctlTimedN   = 2 // messages received up to then
)

func (st *subState) run(ctx context.Context, s childSpec, codec *Codec, sc subConn) {
	defer sc.Close()
	next := uint32(0)
	every := uint32(max(1, s.Every))
	received := st.ctl.field(st.line, ctlReceived)
	lastRecv := st.ctl.field(st.line, ctlLastRecv)
	timedN := st.ctl.field(st.line, ctlTimedN)
	nlat := 0
	for n := 0; n < s.Count; n++ {
		msg, err := sc.Recv(ctx)
		if err != nil {
			// End of input is how a socket publisher says it is done.
			if ctx.Err() == nil && !errors.Is(err, io.EOF) {
				e := err.Error()
				st.errMsg.Store(&e)
			}
			return
		}
		// Timed: every Every-th message by its sequence (the publisher
		// read the clock for those), and the last one expected. The clock
		// is read as the message is handed over, before it is verified
		// (a 100 KB check takes microseconds); a corrupt message is not
		// timed.
		var now int64
		timed := every == 1 || n == s.Count-1 || len(msg) >= 4 && binary.LittleEndian.Uint32(msg)%every == 0
		if timed {
			now = nanotime()
		}
		seq, ts, err := codec.Verify(msg)
		if timed && err == nil {
			if n == 0 {
				st.first.Store(ts)
			}
			if nlat < len(st.lat) {
				st.lat[nlat] = now - ts
				nlat++
				st.timed.Store(int64(nlat))
			}
			shmword.StoreRelease(lastRecv, uint64(now))
			shmword.StoreRelease(timedN, uint64(n+1))
		}
		switch {
		case err != nil:
			st.corrupt.Add(1)
			e := err.Error()
			st.firstBad.CompareAndSwap(nil, &e)
		case seq > next:
			st.gaps.Add(int64(seq - next))
			next = seq + 1
		case seq < next:
			st.reordered.Add(1)
		default:
			next = seq + 1
		}
		shmword.StoreRelease(received, uint64(n+1))
	}
}

func (st *subState) result() childResult {
	r := childResult{
		Received:    int(atomic.LoadUint64(st.ctl.field(st.line, ctlReceived))),
		Corrupt:     int(st.corrupt.Load()),
		Gaps:        int(st.gaps.Load()),
		Reordered:   int(st.reordered.Load()),
		FirstSendNs: st.first.Load(),
		LastRecvNs:  int64(atomic.LoadUint64(st.ctl.field(st.line, ctlLastRecv))),
		TimedN:      int(atomic.LoadUint64(st.ctl.field(st.line, ctlTimedN))),
		CPUNs:       cpuSelf() - st.cpu0,
	}
	if e := st.errMsg.Load(); e != nil {
		r.Err = *e
	}
	if e := st.firstBad.Load(); e != nil {
		r.FirstErr = *e
	}
	return r
}

func writeSamples(path string, s []int64) error {
	if path == "" {
		return nil
	}
	var b []byte
	if len(s) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*8)
	}
	return os.WriteFile(path, b, 0o600)
}

func readSamples(path string) ([]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(b)/8)
	if len(out) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(out)*8), b)
	}
	return out, nil
}
