package ringbench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// A benchmark runs its publisher in this process and its subscriber in a
// child: the test binary re-executed with the spec in envSpec. The child
// reports on fd 3 (JSON lines: one when it is ready, one with its result)
// and, for unixsock, gets its end of the socket pair as fd 4.
const (
	envSpec = "RINGBENCH_SPEC"
	// envProfile names a file for the child's CPU profile (optional).
	envProfile = "RINGBENCH_CHILD_CPUPROFILE"
	resultFd   = 3
	sockFd     = 4
)

// Implementations and modes.
const (
	implCopy = "shimmy-copy"      // Publish / Next: copy in, copy out (shared publisher: CAS claims)
	implExcl = "shimmy-exclusive" // as shimmy-copy, with an exclusive publisher (no CAS per message)
	implZero = "shimmy-zerocopy"  // Claim+Commit / Peek+Done, filled and read in place, exclusive publisher
	// As shimmy-zerocopy, with ClaimBatch/CommitBatch: frames for up to 64
	// messages a claim at saturation (one in latency runs).
	implBatch = "shimmy-batch"
	implBare  = "bare-spsc" // the physical limit: fixed slots, two counters
	implSock  = "unixsock"  // socketpair(AF_UNIX, SOCK_SEQPACKET)

	modeThroughput = "throughput"
	modeLatency    = "latency"
	modeFutex      = "futex"

	// The bare futex child's sleep as an ordinary Go system call (the
	// default, "sleep", holds the processor as C does).
	idleSleepSyscall = "sleep-syscall"
)

// Pacing of the latency runs: well below saturation, so that latency is
// not queueing. A sleeping subscriber needs longer than a busy one: a
// cross-core futex wake-up alone takes tens of microseconds here.
var interval = map[string]int64{"busy": 20_000, "sleep": 100_000}

// spec is what the parent tells its child.
type spec struct {
	Mode  string
	Impl  string
	Size  int
	Idle  string // "busy" or "sleep"
	N     int    // messages
	Path  string // shm file
	Cap   uint64 // ring data bytes
	Spoil int    // tests: the publisher spoils the last 8 bytes of message Spoil-1 (0: none)
}

// result is what the child reports.
type result struct {
	Ready  bool   `json:",omitempty"`
	N      int    // messages received
	Bad    int    // messages whose sequence or length was wrong
	Err    string // first failure
	P50    int64  // one-way latency percentiles, ns
	P99    int64
	Max    int64
	Sink   uint64 // keeps the in-place reads from being optimised away
	Stamps int    // latency samples
}

func capacity(size int) uint64 {
	if size > 8<<10 {
		return 4 << 20
	}
	return 1 << 20
}

func sizeName(size int) string {
	switch {
	case size%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", size>>10)
	default:
		return fmt.Sprintf("%dB", size)
	}
}

func ringConfig(sp spec) channel.Config {
	return channel.Config{Capacity: sp.Cap, MaxMessage: uint32(max(sp.Size, 64<<10))}
}

func idleOf(name string) channel.Idle {
	if name == "busy" {
		return channel.IdleBusy
	}
	return channel.IdleSleep
}

// Messages carry their sequence number in the first and the last 8 bytes
// (a torn or misplaced message fails the check) and, in latency runs, the
// publisher's CLOCK_MONOTONIC stamp in bytes 8..16, which in a 16-byte
// message replaces the trailing sequence.
var le = binary.LittleEndian

func mark(buf []byte, seq uint64) {
	le.PutUint64(buf, seq)
	le.PutUint64(buf[len(buf)-8:], seq)
}

func stamp(buf []byte) { le.PutUint64(buf[8:], uint64(nanotime())) }

func verify(buf []byte, size int, seq uint64, latency bool) error {
	if len(buf) != size {
		return fmt.Errorf("message %d: %d bytes, want %d", seq, len(buf), size)
	}
	if got := le.Uint64(buf); got != seq {
		return fmt.Errorf("message %d: first 8 bytes carry %d", seq, got)
	}
	if !latency || size > 16 {
		if got := le.Uint64(buf[size-8:]); got != seq {
			return fmt.Errorf("message %d: last 8 bytes carry %d", seq, got)
		}
	}
	return nil
}

// touch reads one word of every cache line of buf: the least a consumer
// that reads in place does to bring a whole message to its core.
func touch(buf []byte) uint64 {
	var s uint64
	for i := 0; i+8 <= len(buf); i += 64 {
		s += le.Uint64(buf[i:])
	}
	return s
}

func pattern(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// ---------------------------------------------------------------- parent

// session is one parent-child pair for one (sub-)benchmark run.
type session struct {
	sp     spec
	seg    *shm.Segment
	ring   *channel.Ring
	pub    *channel.Publisher
	bt     channel.Batch // sendBatch: the open batch and its next frame
	bi     int
	sizes  []int
	bare   *Bare
	sock   int
	cmd    *exec.Cmd
	out    *bufio.Reader
	outF   *os.File
	ctx    context.Context
	cancel context.CancelFunc
	gone   atomic.Bool   // the child exited
	exited chan struct{} // closed when the child exited
	werr   error         // the child's exit status, after exited
	src    []byte
	send   func(seq uint64, latency bool) error
}

var shmSeq atomic.Int64

// start makes the shared memory (or socket pair), starts the child and
// waits until it has joined.
func start(sp spec) (s *session, err error) {
	s = &session{sp: sp, sock: -1, exited: make(chan struct{}), src: pattern(max(sp.Size, 16))}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.close()
			s = nil
		}
	}()
	var extra []*os.File
	name := fmt.Sprintf("ringbench-%d-%d", os.Getpid(), shmSeq.Add(1))
	switch {
	case sp.Mode == modeFutex:
		if s.seg, err = shm.CreatePOSIX(name, shm.PageSize(), shm.Options{Exclusive: true}); err != nil {
			return nil, err
		}
	case sp.Impl == implCopy || sp.Impl == implExcl || sp.Impl == implZero || sp.Impl == implBatch:
		cfg := ringConfig(sp).WithDefaults()
		if s.seg, err = shm.CreatePOSIX(name, cfg.Size(), shm.Options{Exclusive: true}); err != nil {
			return nil, err
		}
		if s.ring, err = channel.Format(s.seg.Bytes(), cfg); err != nil {
			return nil, err
		}
		if s.pub, err = s.ring.NewPublisher(channel.PublisherOptions{Idle: idleOf(sp.Idle), Exclusive: sp.Impl != implCopy}); err != nil {
			return nil, err
		}
		s.send = s.sendShimmy
		if sp.Impl == implBatch {
			s.send = s.sendBatch
		}
	case sp.Impl == implBare:
		if s.seg, err = shm.CreatePOSIX(name, BareSize(sp.Cap), shm.Options{Exclusive: true}); err != nil {
			return nil, err
		}
		if s.bare, err = NewBare(s.seg.Bytes(), sp.Cap, uint64(sp.Size), sp.Idle == "sleep", &s.gone); err != nil {
			return nil, err
		}
		s.send = s.sendBare
	case sp.Impl == implSock:
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socketpair: %w", err)
		}
		s.sock = fds[0]
		child := os.NewFile(uintptr(fds[1]), "sock")
		defer child.Close()
		for _, fd := range fds {
			// As much buffering as the ring has, where the kernel allows it.
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, int(sp.Cap))
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, int(sp.Cap))
		}
		extra = append(extra, nil, child) // fd 3 is set below
		s.send = s.sendSock
	default:
		return nil, fmt.Errorf("unknown implementation %q", sp.Impl)
	}
	if s.seg != nil {
		s.sp.Path = s.seg.Path()
	}
	js, err := json.Marshal(s.sp)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	s.outF, s.out = r, bufio.NewReader(r)
	if len(extra) == 0 {
		extra = []*os.File{w}
	} else {
		extra[0] = w
	}
	// The arguments only matter if the environment were lost: then the
	// child runs no test and exits, and the parent sees no ready line.
	s.cmd = exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	// Under -race a child would sleep a second at exit (atexit_sleep_ms).
	s.cmd.Env = append(os.Environ(), envSpec+"="+string(js), "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	s.cmd.ExtraFiles = extra
	// A spinning child must not outlive a parent killed by a timeout.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start child: %w", err)
	}
	go func() {
		s.werr = s.cmd.Wait()
		s.gone.Store(true)
		s.cancel()
		close(s.exited)
	}()
	res, err := s.read()
	if err != nil {
		return nil, err
	}
	if !res.Ready {
		return nil, fmt.Errorf("child: %s", res.Err)
	}
	if s.seg != nil {
		// Both sides have it mapped: unlink the name now, so that a
		// benchmark killed by a timeout leaves nothing in /dev/shm.
		_ = s.seg.Remove()
	}
	return s, nil
}

// read returns the child's next report.
func (s *session) read() (result, error) {
	var res result
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		<-s.exited
		return res, fmt.Errorf("child reported nothing (%v), exit: %v", err, s.werr)
	}
	if err := json.Unmarshal(line, &res); err != nil {
		return res, fmt.Errorf("child report %q: %w", line, err)
	}
	return res, nil
}

// produce publishes sp.N messages: as fast as the transport takes them, or
// paced one per interval by busy-waiting in latency runs.
func (s *session) produce() error {
	if s.sp.Mode == modeFutex {
		return s.produceFutex()
	}
	lat := s.sp.Mode == modeLatency
	every := interval[s.sp.Idle]
	next := nanotime()
	for i := 0; i < s.sp.N; i++ {
		if lat {
			next += every
			for nanotime() < next {
			}
		}
		if err := s.send(uint64(i), lat); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		if lat {
			// After a stall, resume the pace instead of sending a burst.
			if now := nanotime(); now-next > every {
				next = now
			}
		}
	}
	return nil
}

func (s *session) fill(buf []byte, seq uint64, lat bool) {
	mark(buf, seq)
	if s.sp.Spoil != 0 && int(seq) == s.sp.Spoil-1 {
		le.PutUint64(buf[len(buf)-8:], seq+1)
	}
	if lat {
		stamp(buf)
	}
}

// sendShimmy copies a prepared message in (Publish), or fills the claimed
// frame in place (Claim/Commit). The stamp is taken when the message is
// ready to go: before Publish, which copies it; after filling a claim.
func (s *session) sendShimmy(seq uint64, lat bool) error {
	if s.sp.Impl != implZero {
		s.fill(s.src, seq, lat)
		return s.pub.Publish(s.ctx, s.src)
	}
	c, err := s.pub.Claim(s.ctx, s.sp.Size)
	if err != nil {
		return err
	}
	copy(c.Buf, s.src)
	s.fill(c.Buf, seq, lat)
	return s.pub.Commit(c)
}

// sendBatch fills the next frame of the open batch, claiming frames for
// up to 64 of the messages still to send (one when paced), and commits
// the batch with its last frame.
func (s *session) sendBatch(seq uint64, lat bool) error {
	if s.bi == s.bt.Len() {
		n := 1
		if !lat {
			n = min(64, s.sp.N-int(seq))
		}
		s.sizes = s.sizes[:0]
		for range n {
			s.sizes = append(s.sizes, s.sp.Size)
		}
		bt, err := s.pub.ClaimBatch(s.ctx, s.sizes)
		if err != nil {
			return err
		}
		s.bt, s.bi = bt, 0
	}
	buf := s.bt.Buf(s.bi)
	copy(buf, s.src)
	s.fill(buf, seq, lat)
	s.bi++
	if s.bi < s.bt.Len() {
		return nil
	}
	return s.pub.CommitBatch(s.bt)
}

func (s *session) sendBare(seq uint64, lat bool) error {
	slot, err := s.bare.Claim()
	if err != nil {
		return err
	}
	buf := slot[:s.sp.Size]
	copy(buf, s.src)
	s.fill(buf, seq, lat)
	s.bare.Commit()
	return nil
}

func (s *session) sendSock(seq uint64, lat bool) error {
	s.fill(s.src, seq, lat)
	flags := unix.MSG_NOSIGNAL
	if s.sp.Idle == "busy" {
		flags |= unix.MSG_DONTWAIT
	}
	for spins := 0; ; spins++ {
		err := sendto(s.sock, s.src, flags)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			if spins&1023 == 1023 && s.gone.Load() {
				return errStopped
			}
			continue
		}
		return err
	}
}

// Futex baseline layout, in one shared page.
const (
	fxWord  = 0   // u32 bumped for every message
	fxStamp = 64  // u64 publisher's stamp
	fxSeq   = 72  // u64 message number
	fxAck   = 128 // u64 last message the child took
)

func u64at(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }
func u32at(mem []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }

// produceFutex wakes the child once per interval; each wake-up carries a
// stamp. The child acknowledges every message so that no stamp is
// overwritten before it is read.
func (s *session) produceFutex() error {
	mem := s.seg.Bytes()
	word, ack := u32at(mem, fxWord), u64at(mem, fxAck)
	every := interval["sleep"]
	next := nanotime()
	for i := uint64(1); i <= uint64(s.sp.N); i++ {
		next += every
		for spins := 0; nanotime() < next || atomic.LoadUint64(ack) != i-1; spins++ {
			if spins&1023 == 1023 && s.gone.Load() {
				return errStopped
			}
		}
		atomic.StoreUint64(u64at(mem, fxSeq), i)
		atomic.StoreUint64(u64at(mem, fxStamp), uint64(nanotime()))
		atomic.AddUint32(word, 1)
		futexWake(word)
		if now := nanotime(); now-next > every {
			next = now
		}
	}
	return nil
}

// finish waits for the child's result and its exit.
func (s *session) finish() (result, error) {
	res, err := s.read()
	if err != nil {
		return res, err
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		return res, errors.New("child did not exit after reporting")
	}
	if s.werr != nil {
		return res, fmt.Errorf("child: %w", s.werr)
	}
	if res.Err != "" {
		return res, fmt.Errorf("child: %s (%d of %d messages bad)", res.Err, res.Bad, res.N)
	}
	if res.N != s.sp.N {
		return res, fmt.Errorf("child received %d messages, want %d", res.N, s.sp.N)
	}
	return res, nil
}

// close ends the child if it still runs and frees everything.
func (s *session) close() {
	if s.cmd != nil && s.cmd.Process != nil && !s.gone.Load() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.pub != nil {
		s.pub.Close()
	}
	if s.ring != nil {
		s.ring.Close()
	}
	if s.seg != nil {
		s.seg.Close()
		_ = s.seg.Remove() // already gone once the child joined
	}
	if s.sock >= 0 {
		unix.Close(s.sock)
	}
	if s.outF != nil {
		s.outF.Close()
	}
}

// runPair runs one parent-child exchange of sp.N messages; onStart is
// called once the child is ready (a benchmark resets its timer there). It
// returns the child's result and the time from the first message sent to
// the child's report that it received the last.
func runPair(sp spec, onStart func()) (result, time.Duration, error) {
	s, err := start(sp)
	if err != nil {
		return result{}, 0, err
	}
	defer s.close()
	if onStart != nil {
		onStart()
	}
	t0 := nanotime()
	perr := s.produce()
	res, err := s.finish()
	el := time.Duration(nanotime() - t0)
	if perr != nil {
		return res, el, errors.Join(perr, err)
	}
	return res, el, err
}

func sendto(fd int, b []byte, flags int) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func recvfrom(fd int, b []byte, flags int) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// ----------------------------------------------------------------- child

func TestMain(m *testing.M) {
	if js := os.Getenv(envSpec); js != "" {
		os.Exit(childMain(js))
	}
	os.Exit(m.Run())
}

// childMain is the subscriber side. It reports on fd 3 and exits 0 even
// when the run failed, so that the parent reads the reason from the report.
func childMain(js string) int {
	out := os.NewFile(resultFd, "result")
	report := func(r result) int {
		b, _ := json.Marshal(r)
		if _, err := out.Write(append(b, '\n')); err != nil {
			return 2
		}
		return 0
	}
	var sp spec
	if err := json.Unmarshal([]byte(js), &sp); err != nil {
		return report(result{Err: fmt.Sprintf("spec: %v", err)})
	}
	// The subscriber's side of "where the time goes": a CPU profile of
	// the child, overwritten by every run (the last is the longest).
	if path := os.Getenv(envProfile); path != "" {
		if f, err := os.Create(path); err == nil {
			defer f.Close()
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	res, err := child(sp, func() error {
		if report(result{Ready: true}) != 0 {
			return errors.New("cannot report ready")
		}
		return nil
	})
	if err != nil && res.Err == "" {
		res.Err = err.Error()
	}
	return report(res)
}

// consumer is the subscriber side of one implementation: next returns the
// next message (in place or copied out), done releases it.
type consumer struct {
	next  func() ([]byte, error)
	done  func()
	touch bool // the message is read in place: touch every cache line
}

func child(sp spec, ready func() error) (result, error) {
	if sp.Mode == modeFutex {
		return childFutex(sp, ready)
	}
	var c consumer
	ctx := context.Background()
	switch sp.Impl {
	case implCopy, implExcl, implZero, implBatch:
		seg, err := shm.OpenPOSIX(sp.Path, 0)
		if err != nil {
			return result{}, err
		}
		defer seg.Close()
		ring, err := channel.Open(seg.Bytes())
		if err != nil {
			return result{}, err
		}
		defer ring.Close()
		sub, err := ring.NewSubscriber(channel.SubscriberOptions{Idle: idleOf(sp.Idle), From: channel.StartOldest})
		if err != nil {
			return result{}, err
		}
		defer sub.Close()
		if sp.Impl != implZero && sp.Impl != implBatch {
			buf := make([]byte, 0, sp.Size)
			c.next = func() ([]byte, error) {
				var err error
				buf, err = sub.Next(ctx, buf)
				return buf, err
			}
			c.done = func() {}
		} else {
			c.next = func() ([]byte, error) { return sub.Peek(ctx) }
			c.done = sub.Done
			c.touch = true
		}
	case implBare:
		seg, err := shm.OpenPOSIX(sp.Path, BareSize(sp.Cap))
		if err != nil {
			return result{}, err
		}
		defer seg.Close()
		b, err := NewBare(seg.Bytes(), sp.Cap, uint64(sp.Size), sp.Idle == "sleep", nil)
		if err != nil {
			return result{}, err
		}
		c.next = func() ([]byte, error) {
			m, err := b.Peek()
			if err != nil {
				return nil, err
			}
			return m[:sp.Size], nil
		}
		c.done = b.Done
		c.touch = true
	case implSock:
		fd := sockFd
		defer unix.Close(fd)
		buf := make([]byte, sp.Size+1) // one spare byte: a longer message shows
		flags := 0
		if sp.Idle == "busy" {
			flags = unix.MSG_DONTWAIT
		}
		c.next = func() ([]byte, error) {
			for {
				n, err := recvfrom(fd, buf, flags)
				if err == nil {
					if n == 0 {
						return nil, errors.New("socket closed")
					}
					return buf[:n], nil
				}
				if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
					return nil, err
				}
			}
		}
		c.done = func() {}
	default:
		return result{}, fmt.Errorf("unknown implementation %q", sp.Impl)
	}
	if err := ready(); err != nil {
		return result{}, err
	}
	return consume(sp, c)
}

// consume takes sp.N messages, checks each, and records the one-way
// latency of each in latency runs.
func consume(sp spec, c consumer) (result, error) {
	lat := sp.Mode == modeLatency
	var res result
	var samples []int64
	if lat {
		samples = make([]int64, 0, sp.N)
	}
	for i := 0; i < sp.N; i++ {
		msg, err := c.next()
		if err != nil {
			return res, fmt.Errorf("message %d: %w", i, err)
		}
		if lat {
			now := nanotime()
			if len(msg) >= 16 {
				samples = append(samples, now-int64(le.Uint64(msg[8:])))
			}
		}
		if err := verify(msg, sp.Size, uint64(i), lat); err != nil {
			res.Bad++
			if res.Err == "" {
				res.Err = err.Error()
			}
		}
		if c.touch {
			res.Sink += touch(msg)
		}
		c.done()
		res.N++
	}
	percentiles(&res, samples)
	return res, nil
}

func percentiles(res *result, samples []int64) {
	res.Stamps = len(samples)
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) int64 { return samples[min(len(samples)-1, int(q*float64(len(samples))))] }
	res.P50, res.P99, res.Max = at(0.50), at(0.99), samples[len(samples)-1]
}

// childFutex sleeps on the futex word like a subscriber with the sleeping
// idle strategy, and stamps each wake-up.
func childFutex(sp spec, ready func() error) (result, error) {
	seg, err := shm.OpenPOSIX(sp.Path, shm.PageSize())
	if err != nil {
		return result{}, err
	}
	defer seg.Close()
	mem := seg.Bytes()
	word := u32at(mem, fxWord)
	// Read before reporting ready: the first wake-up may come at once.
	last := atomic.LoadUint32(word)
	if err := ready(); err != nil {
		return result{}, err
	}
	sleep := futexWait
	if sp.Idle == idleSleepSyscall {
		sleep = futexWaitSyscall
	}
	var res result
	samples := make([]int64, 0, sp.N)
	for res.N < sp.N {
		v := atomic.LoadUint32(word)
		if v == last {
			sleep(word, v, 50*time.Millisecond)
			continue
		}
		now := nanotime()
		last = v
		seq := atomic.LoadUint64(u64at(mem, fxSeq))
		samples = append(samples, now-int64(atomic.LoadUint64(u64at(mem, fxStamp))))
		res.N++
		if seq != uint64(res.N) && res.Err == "" {
			res.Bad++
			res.Err = fmt.Sprintf("wake-up %d carries message %d", res.N, seq)
		}
		atomic.StoreUint64(u64at(mem, fxAck), seq)
	}
	percentiles(&res, samples)
	return res, nil
}
