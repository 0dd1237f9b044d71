package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every publisher and subscriber runs in a process of its own: the harness
// re-executes its own binary (the shimmy binary, the test binary, any
// program that imports this package) with the role in envChild, and this
// package's init runs the role before main. The child talks to the harness
// through lines: it prints "READY [addr]" when joined and "RESULT {json}"
// at the end; the publisher waits for "GO" on its stdin, a subscriber for
// "STOP" (or end of input) once the harness has seen every message arrive
// or given up waiting.
const envChild = "SHIMMY_BENCH_CHILD"

func init() {
	spec := os.Getenv(envChild)
	if spec == "" {
		return
	}
	os.Exit(childMain(spec))
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
}

// childResult is what a child reports.
type childResult struct {
	Sent        int    `json:"sent,omitempty"`
	Received    int    `json:"received,omitempty"`
	Corrupt     int    `json:"corrupt,omitempty"`
	Gaps        int    `json:"gaps,omitempty"`      // messages skipped in the sequence
	Reordered   int    `json:"reordered,omitempty"` // duplicates or messages out of order
	FirstSendNs int64  `json:"first_send_ns,omitempty"`
	LastRecvNs  int64  `json:"last_recv_ns,omitempty"`
	StartNs     int64  `json:"start_ns,omitempty"`
	EndNs       int64  `json:"end_ns,omitempty"`
	CPUNs       int64  `json:"cpu_ns"`
	Err         string `json:"err,omitempty"`
	FirstErr    string `json:"first_err,omitempty"` // the first bad payload
}

// ctlFile holds one progress counter per cache line: [0] messages sent,
// [1+i] messages subscriber i received. Shared memory, so the harness and
// the publisher (for flow control) read it while the subscribers run.
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

func (c *ctlFile) word(i int) *uint64 { return (*uint64)(unsafe.Pointer(&c.mem[i*ctlSlot])) }
func (c *ctlFile) sent() uint64       { return atomic.LoadUint64(c.word(0)) }
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

func childMain(raw string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: bad spec: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, ok := dialers[s.System]
	if !ok {
		report(childResult{Err: "unknown system " + s.System})
		return 1
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
	in := bufio.NewScanner(os.Stdin)
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
	st := &subState{lat: make([]int64, s.Count), cpu0: cpuSelf()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.run(ctx, s, codec, sc, ctl)
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
	n := int(st.n.Load())
	if err := writeSamples(s.Samples, st.lat[:n]); err != nil && res.Err == "" {
		res.Err = err.Error()
	}
	report(res)
	return 0
}

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
	var filled *byte // the reused buffer whose filler is in place
	fail := func(err error) {
		if res.Err == "" {
			res.Err = err.Error()
		}
	}
loop:
	for ; i < s.Count; i++ {
		if interval > 0 {
			if d := start + int64(float64(i)*interval) - nanotime(); d > 0 {
				time.Sleep(time.Duration(d))
			}
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
				time.Sleep(20 * time.Microsecond)
			}
		}
		buf, fresh, err := pc.Buf(ctx)
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
		ts := nanotime()
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

// subState is a subscriber's running tally: atomics, so that the result
// can be read while a blocked Recv never returns.
type subState struct {
	lat       []int64
	n         atomic.Int64
	corrupt   atomic.Int64
	gaps      atomic.Int64
	reordered atomic.Int64
	first     atomic.Int64
	last      atomic.Int64
	cpu0      int64
	errMsg    atomic.Pointer[string]
	firstBad  atomic.Pointer[string]
}

func (st *subState) run(ctx context.Context, s childSpec, codec *Codec, sc subConn, ctl *ctlFile) {
	defer sc.Close()
	next := uint32(0)
	word := ctl.word(1 + s.Index)
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
		now := nanotime()
		seq, ts, err := codec.Verify(msg)
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
		if n == 0 {
			st.first.Store(ts)
		}
		st.lat[n] = now - ts
		st.last.Store(now)
		st.n.Store(int64(n + 1))
		atomic.StoreUint64(word, uint64(n+1))
	}
}

func (st *subState) result() childResult {
	r := childResult{
		Received:    int(st.n.Load()),
		Corrupt:     int(st.corrupt.Load()),
		Gaps:        int(st.gaps.Load()),
		Reordered:   int(st.reordered.Load()),
		FirstSendNs: st.first.Load(),
		LastRecvNs:  st.last.Load(),
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
