package channel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/syncbuf"
	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/shm"
	"golang.org/x/sys/unix"
)

// TestMain dispatches re-executed test binaries to their child role
// (process_test.go, crash_test.go): a child runs one role and exits with
// its status, it never runs the tests.
func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

// eventually polls f until it returns nil, failing t after timeout.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	wait.Eventually(t, timeout, f)
}

// newRing formats a ring in anonymous shared memory (mmap, never Go heap:
// the race detector must not track ring memory).
func newRing(t testing.TB, cfg Config) *Ring {
	t.Helper()
	cfg = cfg.WithDefaults()
	mem, err := unix.Mmap(-1, 0, int(cfg.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	r, err := Format(mem, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var shmSeq atomic.Uint64

// newShmRing formats a ring in a fresh POSIX shm object in /dev/shm that
// child processes open by the returned path; it is removed in Cleanup.
func newShmRing(t testing.TB, cfg Config) (*Ring, string) {
	t.Helper()
	cfg = cfg.WithDefaults()
	name := fmt.Sprintf("shimmy-channel-test-%d-%d", os.Getpid(), shmSeq.Add(1))
	seg, err := shm.CreatePOSIX(name, cfg.Size(), shm.Options{Exclusive: true})
	if err != nil {
		t.Fatalf("create ring memory: %v", err)
	}
	t.Cleanup(func() {
		if err := seg.Remove(); err != nil {
			t.Errorf("remove %s: %v", seg.Path(), err)
		}
		seg.Close()
	})
	r, err := Format(seg.Bytes(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, seg.Path()
}

// Environment of a child process.
const (
	envRole   = "SHIMMY_CHILD_ROLE"      // pub, claimer, sub, reader
	envRing   = "SHIMMY_CHILD_RING"      // path of the ring file
	envPub    = "SHIMMY_CHILD_PUB"       // publisher id (pub, claimer)
	envCount  = "SHIMMY_CHILD_COUNT"     // messages to publish (pub, claimer)
	envCounts = "SHIMMY_CHILD_COUNTS"    // messages expected per publisher id, comma separated (sub)
	envQueue  = "SHIMMY_CHILD_QUEUE"     // stream queue (pub, reader)
	envIdle   = "SHIMMY_CHILD_IDLE"      // default, sleep
	envExcl   = "SHIMMY_CHILD_EXCLUSIVE" // "1": the publisher joins as the queue's exclusive publisher
	envPause  = "SHIMMY_CHILD_PAUSE"     // sub: after this many messages, wait for stdin to close
	envStall  = "SHIMMY_CHILD_STALL"     // sub: after this many messages, Peek, print PEEKED and hang
	envTake   = "SHIMMY_CHILD_TAKE"      // reader: die holding the first take (prints TAKEN and hangs)
	envSubs   = "SHIMMY_CHILD_SUBS"      // fansub: subscribers in this process
	envBatch  = "SHIMMY_CHILD_BATCH"     // "1": the publisher publishes in batches (PublishBatch, ClaimBatch); the claimer claims a batch
)

// childTimeout bounds every wait of a child, so that a protocol bug fails
// the test instead of hanging it.
const childTimeout = 30 * time.Second

// child is a re-executed test binary running one role.
type child struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	err   error // from Wait, valid after done

	stderr syncbuf.Buffer

	mu    sync.Mutex
	lines []string
}

// startChild runs the test binary as role, with extra environment
// variables. It is killed in Cleanup if it is still running.
func startChild(t testing.TB, name, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$")
	// The race detector sleeps a second at exit by default, for the
	// sake of racing goroutines; children have none left by then.
	cmd.Env = append(os.Environ(), envRole+"="+role, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	c := &child{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		default:
			c.kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) exit: %v\nstderr:\n%s", c.name, c.pid(), c.err, c.errText())
		}
	})
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) kill() { c.cmd.Process.Signal(syscall.SIGKILL) }

// release closes the child's stdin: the "go on" signal of roles that wait.
func (c *child) release() { c.stdin.Close() }

func (c *child) errText() string { return c.stderr.String() }

func (c *child) output() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// waitLine waits until the child printed a line equal to s.
func (c *child) waitLine(s string) {
	c.t.Helper()
	eventually(c.t, childTimeout, func() error {
		for _, l := range c.output() {
			if l == s {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited (%v) without printing %q; stderr:\n%s", c.name, c.err, s, c.errText())
		default:
		}
		return fmt.Errorf("%s has not printed %q", c.name, s)
	})
}

// waitOK waits for the child to exit and fails the test unless it exited 0.
func (c *child) waitOK() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(childTimeout):
		c.kill()
		<-c.done
		c.t.Fatalf("%s did not finish within %v; stderr:\n%s", c.name, childTimeout, c.errText())
	}
	if c.err != nil {
		c.t.Fatalf("%s failed: %v; stderr:\n%s", c.name, c.err, c.errText())
	}
}

// waitKilled waits for a child the test killed.
func (c *child) waitKilled() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(childTimeout):
		c.t.Fatalf("%s survived SIGKILL", c.name)
	}
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		c.t.Fatalf("%s: want death by SIGKILL, got %v; stderr:\n%s", c.name, c.err, c.errText())
	}
}

// Test messages. Every message is a pure function of (publisher, seq), so
// any reader can check it byte for byte:
//
//	n == 0       only publisher 0 sends empty messages (so they can be attributed)
//	n in 1..4    [0] publisher, then pattern(publisher, n): no room for a sequence
//	n in 5..15   [0] publisher, [1:5] seq, then body bytes
//	n >= 16      [0] publisher, [1:5] seq, [5:9] length, [9:13] crc32 of [16:], [13:16] zero, [16:] body
//
// The body is pseudo-random (splitmix64 of publisher and seq).
const seqMin = 5 // smallest message that carries its sequence

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// msgSize is the size of message seq of publisher pub: every fourth one of
// a list of edge sizes, then sizes up to max, then small ones.
func msgSize(pub, seq, max int) int {
	h := int(mix(uint64(pub)<<40^uint64(seq)) >> 1)
	var n int
	switch seq % 4 {
	case 0:
		edges := []int{0, 1, 15, 16, 17, max - 1, max}
		n = edges[seq/4%len(edges)]
	case 1:
		n = h % (max + 1)
	default:
		n = h % 48
	}
	if n == 0 && pub != 0 {
		n = 1
	}
	return n
}

func fillRandom(b []byte, seed uint64) {
	for i := 0; i < len(b); i += 8 {
		seed = mix(seed)
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], seed)
		copy(b[i:], w[:])
	}
}

// encodeMsg writes message seq of publisher pub (of size n) into b[:n].
func encodeMsg(b []byte, pub, seq, n int) []byte {
	b = b[:n]
	if n == 0 {
		return b
	}
	b[0] = byte(pub)
	if n < seqMin {
		fillRandom(b[1:], uint64(pub)<<32^uint64(n)^0xabcdef)
		return b
	}
	binary.LittleEndian.PutUint32(b[1:], uint32(seq))
	if n < 16 {
		fillRandom(b[5:], uint64(pub)<<40^uint64(seq))
		return b
	}
	fillRandom(b[16:], uint64(pub)<<40^uint64(seq))
	binary.LittleEndian.PutUint32(b[5:], uint32(n))
	binary.LittleEndian.PutUint32(b[9:], crc32.ChecksumIEEE(b[16:]))
	clear(b[13:16])
	return b
}

// checker verifies the messages one member receives.
type checker struct {
	max    int
	counts []int   // messages per publisher
	last   []int   // last seq seen per publisher; -1: none
	exact  []bool  // last is known exactly (no loss since), so seq-less messages can be placed
	lostAt []int64 // Lost() when last was recorded
	got    int
	buf    []byte
	// seq-less messages that could not be placed, by publisher and size
	// (stream readers see only some of each publisher's messages).
	unplaced map[[2]int]int
	taken    [][2]int // (pub, seq) of placed messages, when keep is set
	keep     bool
}

func newChecker(max int, counts []int) *checker {
	c := &checker{max: max, counts: counts, buf: make([]byte, max), unplaced: map[[2]int]int{}}
	for range counts {
		c.last = append(c.last, -1)
		c.exact = append(c.exact, true)
		c.lostAt = append(c.lostAt, 0)
	}
	return c
}

// check verifies msg. lost is the member's loss count after reading it;
// placeable says whether the member sees every message it did not lose
// (pubsub), so that a message follows the last one of its publisher and
// one without a sequence can be placed; a stream reader sees only some.
func (c *checker) check(msg []byte, lost int64, placeable bool) error {
	c.got++
	n := len(msg)
	pub := 0
	if n > 0 {
		pub = int(msg[0])
	}
	if pub >= len(c.counts) {
		return fmt.Errorf("message %d: %d bytes from unknown publisher %d: %x", c.got, n, pub, head(msg))
	}
	seq := -1
	switch {
	case n >= seqMin:
		seq = int(binary.LittleEndian.Uint32(msg[1:]))
	case placeable && c.exact[pub] && c.lostAt[pub] == lost:
		seq = c.last[pub] + 1
	}
	if seq < 0 {
		if want := encodeMsg(c.buf, pub, 0, n); !bytes.Equal(msg, want) {
			return fmt.Errorf("message %d: %d-byte message from publisher %d is %x, want %x", c.got, n, pub, msg, want)
		}
		c.unplaced[[2]int{pub, n}]++
		c.exact[pub] = false
		return nil
	}
	if seq <= c.last[pub] || seq >= c.counts[pub] {
		return fmt.Errorf("message %d: publisher %d seq %d after seq %d (%d published)", c.got, pub, seq, c.last[pub], c.counts[pub])
	}
	if placeable && c.exact[pub] && c.lostAt[pub] == lost && seq != c.last[pub]+1 {
		return fmt.Errorf("message %d: publisher %d seq %d, want %d (nothing lost)", c.got, pub, seq, c.last[pub]+1)
	}
	want := encodeMsg(c.buf, pub, seq, msgSize(pub, seq, c.max))
	if !bytes.Equal(msg, want) {
		if n >= 16 && crc32.ChecksumIEEE(msg[16:]) != binary.LittleEndian.Uint32(msg[9:]) {
			return fmt.Errorf("message %d: publisher %d seq %d: checksum mismatch (%d bytes)", c.got, pub, seq, n)
		}
		return fmt.Errorf("message %d: publisher %d seq %d: %d bytes %x..., want %d bytes %x...", c.got, pub, seq, n, head(msg), len(want), head(want))
	}
	c.last[pub], c.exact[pub], c.lostAt[pub] = seq, true, lost
	if c.keep {
		c.taken = append(c.taken, [2]int{pub, seq})
	}
	return nil
}

func head(b []byte) []byte { return b[:min(len(b), 24)] }

// runChild runs one child role and returns the exit status. Errors go to
// stderr; results to stdout, one fact a line.
func runChild(role string) int {
	if err := childMain(role); err != nil {
		fmt.Fprintf(os.Stderr, "child %s (pid %d): %v\n", role, os.Getpid(), err)
		return 1
	}
	return 0
}

func envInt(name string) int {
	v, _ := strconv.Atoi(os.Getenv(name))
	return v
}

// envStep returns the message count in variable name, -1 if it is unset.
func envStep(name string) int {
	if _, ok := os.LookupEnv(name); !ok {
		return -1
	}
	return envInt(name)
}

func childMain(role string) error {
	seg, err := shm.OpenPOSIX(os.Getenv(envRing), 0)
	if err != nil {
		return err
	}
	defer seg.Close()
	r, err := Open(seg.Bytes())
	if err != nil {
		return err
	}
	defer r.Close()
	idle := IdleSleep
	if os.Getenv(envIdle) == "default" {
		idle = IdleDefault
	}
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	say := func(s string) { fmt.Fprintln(out, s); out.Flush() }
	// Closing stdin is the parent's "go on" signal.
	released := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(released) }()

	switch role {
	case "pub", "claimer":
		return childPublish(ctx, r, role == "claimer", idle, say)
	case "sub":
		return childSubscribe(ctx, r, idle, released, say)
	case "reader":
		return childRead(ctx, r, idle, released, out, say)
	case "stresspub":
		return childStressPublish(ctx, r, idle, say)
	case "stresssub":
		return childStressSubscribe(ctx, r, idle, released, say)
	case "fansub":
		return childFanSubscribe(ctx, r, say)
	}
	return fmt.Errorf("unknown role %q", role)
}

// childPublish publishes COUNT messages as publisher PUB, alternating
// Publish and the zero-copy Claim/Commit. A claimer then claims one more
// message, prints CLAIMED and hangs until it is killed.
func childPublish(ctx context.Context, r *Ring, claimer bool, idle Idle, say func(string)) error {
	pub, count, max := envInt(envPub), envInt(envCount), int(r.Config().MaxMessage)
	p, err := r.NewPublisher(PublisherOptions{Idle: idle, Queue: envInt(envQueue), Exclusive: os.Getenv(envExcl) == "1"})
	if err != nil {
		return err
	}
	defer p.Close()
	buf := make([]byte, max)
	batch := os.Getenv(envBatch) == "1"
	if batch {
		if err := publishBatches(ctx, p, pub, count, max); err != nil {
			return err
		}
	}
	for seq := 0; seq < count && !batch; seq++ {
		n := msgSize(pub, seq, max)
		if seq%2 == 0 {
			if err := p.Publish(ctx, encodeMsg(buf, pub, seq, n)); err != nil {
				return fmt.Errorf("publish seq %d: %w", seq, err)
			}
			continue
		}
		c, err := p.Claim(ctx, n)
		if err != nil {
			return fmt.Errorf("claim seq %d: %w", seq, err)
		}
		encodeMsg(c.Buf, pub, seq, n)
		if err := p.Commit(c); err != nil {
			return fmt.Errorf("commit seq %d: %w", seq, err)
		}
	}
	if claimer {
		if batch {
			// A batch of several frames, half of them filled.
			// Near the end of the ring a batch may get one frame: give
			// it up (it becomes padding) and claim again after the wrap.
			var b Batch
			for try := 0; b.Len() < 2; try++ {
				if b.Len() != 0 {
					p.abort()
				}
				if b, err = p.ClaimBatch(ctx, []int{max / 4, 0, 17, max / 4, 1}); err != nil {
					return err
				}
				if try > 2 {
					return fmt.Errorf("claimed a batch of %d frames, want several", b.Len())
				}
			}
			for i := 0; i < b.Len()/2; i++ {
				fillRandom(b.Buf(i), uint64(i))
			}
			say("CLAIMED")
			time.Sleep(time.Hour)
		}
		if _, err := p.Claim(ctx, max); err != nil {
			return err
		}
		say("CLAIMED")
		time.Sleep(time.Hour)
	}
	say("DONE")
	return nil
}

// publishBatches publishes count messages of publisher pub in batches of
// 1 to 9, alternately copied (PublishBatch) and filled in place
// (ClaimBatch, which may claim fewer than asked).
func publishBatches(ctx context.Context, p *Publisher, pub, count, max int) error {
	var msgs [][]byte
	var sizes []int
	for seq, round := 0, 0; seq < count; round++ {
		g := min(count-seq, 1+round%9)
		sizes = sizes[:0]
		for i := 0; i < g; i++ {
			sizes = append(sizes, msgSize(pub, seq+i, max))
		}
		if round%2 == 0 {
			msgs = msgs[:0]
			for i, n := range sizes {
				msgs = append(msgs, encodeMsg(make([]byte, n), pub, seq+i, n))
			}
			n, err := p.PublishBatch(ctx, msgs)
			if err != nil {
				return fmt.Errorf("publish batch at seq %d: %d of %d published: %w", seq, n, g, err)
			}
			seq += n
			continue
		}
		b, err := p.ClaimBatch(ctx, sizes)
		if err != nil {
			return fmt.Errorf("claim batch at seq %d: %w", seq, err)
		}
		for i := 0; i < b.Len(); i++ {
			encodeMsg(b.Buf(i), pub, seq+i, sizes[i])
		}
		if err := p.CommitBatch(b); err != nil {
			return fmt.Errorf("commit batch at seq %d: %w", seq, err)
		}
		seq += b.Len()
	}
	return nil
}

func parseCounts() ([]int, int) {
	var counts []int
	total := 0
	for _, f := range strings.Split(os.Getenv(envCounts), ",") {
		n, _ := strconv.Atoi(f)
		counts = append(counts, n)
		total += n
	}
	return counts, total
}

// childSubscribe receives until it has accounted (received or lost) for
// every message of COUNTS, checking each one, and prints RESULT.
func childSubscribe(ctx context.Context, r *Ring, idle Idle, released chan struct{}, say func(string)) error {
	counts, total := parseCounts()
	s, err := r.NewSubscriber(SubscriberOptions{Idle: idle})
	if err != nil {
		return err
	}
	defer s.Close()
	say("READY")
	pause, stall := envStep(envPause), envStep(envStall)
	ck := newChecker(int(r.Config().MaxMessage), counts)
	var msg []byte
	for ck.got+int(s.Lost()) < total {
		if ck.got == pause {
			select {
			case <-released:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ck.got == stall {
			if _, err := s.Peek(ctx); err != nil {
				return err
			}
			say("PEEKED")
			time.Sleep(time.Hour)
		}
		if msg, err = s.Next(ctx, msg); err != nil {
			return fmt.Errorf("after %d messages, %d lost: %w", ck.got, s.Lost(), err)
		}
		if err := ck.check(msg, int64(s.Lost()), true); err != nil {
			return err
		}
	}
	if ck.got+int(s.Lost()) != total {
		return fmt.Errorf("received %d and lost %d of %d", ck.got, s.Lost(), total)
	}
	if _, err := s.TryNext(msg); !errors.Is(err, ErrWouldBlock) {
		return fmt.Errorf("a message beyond the %d published: %v", total, err)
	}
	if s.r.cfg.Policy == PolicyBlock {
		for pub, last := range ck.last {
			if last != counts[pub]-1 || !ck.exact[pub] {
				return fmt.Errorf("publisher %d: last seq %d, want %d", pub, last, counts[pub]-1)
			}
		}
	}
	say(fmt.Sprintf("RESULT %d %d", ck.got, s.Lost()))
	return nil
}

// childRead takes messages from a stream queue until stdin closes and the
// queue is then empty, and reports each: "M pub seq" for messages placed
// by their sequence, "T pub size" for the short ones that carry none.
// With TAKE set it dies holding its first take instead.
func childRead(ctx context.Context, r *Ring, idle Idle, released chan struct{}, out io.Writer, say func(string)) error {
	rd, err := r.NewReader(ReaderOptions{Idle: idle, Queue: envInt(envQueue)})
	if err != nil {
		return err
	}
	defer rd.Close()
	if os.Getenv(envTake) != "" {
		testHookTaken = func() {
			say("TAKEN")
			time.Sleep(time.Hour)
		}
	}
	counts, _ := parseCounts()
	ck := newChecker(int(r.Config().MaxMessage), counts)
	ck.keep = true
	say("READY")
	rctx, cancel := untilReleased(ctx, released)
	defer cancel()
	var msg []byte
	for {
		msg, err = rd.Next(rctx, msg)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			break // released: drain what is left
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", ck.got, err)
		}
		if err := ck.check(msg, 0, false); err != nil {
			return err
		}
	}
	for {
		msg, err = rd.TryNext(msg)
		if errors.Is(err, ErrWouldBlock) {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", ck.got, err)
		}
		if err := ck.check(msg, 0, false); err != nil {
			return err
		}
	}
	for _, m := range ck.taken {
		fmt.Fprintf(out, "M %d %d\n", m[0], m[1])
	}
	for k, n := range ck.unplaced {
		fmt.Fprintf(out, "T %d %d %d\n", k[0], k[1], n)
	}
	say(fmt.Sprintf("RESULT %d", ck.got))
	return nil
}

// untilReleased returns a context that ends when ctx does or when the
// parent releases the child (closes its stdin).
func untilReleased(ctx context.Context, released chan struct{}) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-released:
		case <-ctx.Done():
		}
		cancel()
	}()
	return rctx, cancel
}

// readerReport parses what a reader child printed: placed (pub, seq)
// messages, and counts of unplaced ones by (pub, size).
func readerReport(t testing.TB, c *child) (placed [][2]int, unplaced map[[2]int]int, got int) {
	t.Helper()
	unplaced = map[[2]int]int{}
	for _, l := range c.output() {
		f := strings.Fields(l)
		var v []int
		for _, s := range f[1:] {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s: bad line %q", c.name, l)
			}
			v = append(v, n)
		}
		switch {
		case f[0] == "M" && len(v) == 2:
			placed = append(placed, [2]int{v[0], v[1]})
		case f[0] == "T" && len(v) == 3:
			unplaced[[2]int{v[0], v[1]}] += v[2]
		case f[0] == "RESULT" && len(v) == 1:
			got = v[0]
		}
	}
	return placed, unplaced, got
}

// resultLine returns the fields of the child's RESULT line.
func resultLine(t testing.TB, c *child) []int {
	t.Helper()
	for _, l := range c.output() {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "RESULT" {
			var v []int
			for _, s := range f[1:] {
				n, err := strconv.Atoi(s)
				if err != nil {
					t.Fatalf("%s: bad line %q", c.name, l)
				}
				v = append(v, n)
			}
			return v
		}
	}
	t.Fatalf("%s printed no RESULT; output %q", c.name, c.output())
	return nil
}

func countsEnv(counts []int) string {
	var s []string
	for _, n := range counts {
		s = append(s, strconv.Itoa(n))
	}
	return envCounts + "=" + strings.Join(s, ",")
}
