package channel

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/shm"
)

// The Python client (test/python/ring_client.py) is written from
// docs/ring-format.md alone. Running it against this package in both
// directions, through many wrap-arounds of a small ring, is the check that
// the document describes the ABI this package speaks.

var pySeq atomic.Uint64

// pyRing formats a ring in a fresh POSIX shm object and returns it and
// its path. The object is removed at cleanup.
func pyRing(t *testing.T, cfg Config) (*Ring, string) {
	t.Helper()
	if _, err := os.Stat(shm.DefaultDir); err != nil {
		t.Skipf("ring files live on tmpfs and this machine has no %s: %v", shm.DefaultDir, err)
	}
	name := fmt.Sprintf("shimmy-pytest-%d-%d", os.Getpid(), pySeq.Add(1))
	seg, err := shm.CreatePOSIX(name, cfg.WithDefaults().Size(), shm.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		seg.Remove()
		seg.Close()
	})
	r, err := Format(seg.Bytes(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, seg.Path()
}

// pyClient starts ring_client.py with args and returns its stdout lines
// and a function that waits for it to exit. It skips the test when the
// machine has no python3.
func pyClient(t *testing.T, stdin io.Reader, args ...string) (*bufio.Scanner, func() error) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 is not installed, cannot run the Python ring client: %v", err)
	}
	script, err := filepath.Abs(filepath.Join("..", "test", "python", "ring_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, append([]string{script}, args...)...)
	cmd.Stdin = stdin
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Never leave a child behind, whatever the test does.
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("python client: %w; stderr:\n%s", err, stderr.String())
		}
		return nil
	}
	return sc, wait
}

// pyLine returns the next stdout line of the client, or fails.
func pyLine(t *testing.T, sc *bufio.Scanner, wait func() error) string {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("python client stopped early (%v): %v", sc.Err(), wait())
	}
	return sc.Text()
}

// pyMsg is message i: lengths cycle through 0..max (so frames of every
// size land at every offset and the ring wraps with padding), contents
// differ per message.
func pyMsg(i int, max uint32) []byte {
	n := (i * 131) % int(max+1)
	if i%17 == 0 {
		n = int(max)
	}
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*7 + j*13 + 1)
	}
	return b
}

// pyGap is how many messages a gap frame before message i stands for.
func pyGap(i int) uint32 {
	if i%50 != 25 {
		return 0
	}
	return uint32(i)
}

func TestPythonSubscriber(t *testing.T) {
	const n = 400
	cfg := Config{Capacity: 4096, MaxMessage: 1000, MemberSlots: 8, Lease: 5 * time.Second}
	r, path := pyRing(t, cfg)
	sc, wait := pyClient(t, nil, "sub", path, "-n", fmt.Sprint(n), "--timeout", "120")
	if l := pyLine(t, sc, wait); !strings.HasPrefix(l, "# joined slot ") {
		t.Fatalf("first line %q, want the join", l)
	}
	p, err := r.NewPublisher(PublisherOptions{Idle: IdleDefault})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pubErr := make(chan error, 1)
	go func() {
		// Block policy: the Python subscriber's cursor holds this back, so
		// the ring (a few messages big) wraps about a hundred times. Some
		// messages come after a gap frame, whose losses it must count.
		for i := 0; i < n; i++ {
			msg := pyMsg(i, cfg.MaxMessage)
			if pyGap(i) == 0 {
				if err := p.Publish(ctx, msg); err != nil {
					pubErr <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
				continue
			}
			b, err := p.ClaimBatchLost(ctx, pyGap(i), []int{len(msg)})
			if err == nil && b.Len() == 1 {
				copy(b.Buf(0), msg)
			}
			if err == nil {
				err = p.CommitBatch(b)
			}
			if err == nil && b.Len() == 0 {
				err = p.Publish(ctx, msg) // the gap went alone
			}
			if err != nil {
				pubErr <- fmt.Errorf("publish %d after a gap: %w", i, err)
				return
			}
		}
		pubErr <- nil
	}()
	for i := 0; i < n; i++ {
		want := hex.EncodeToString(pyMsg(i, cfg.MaxMessage))
		if got := pyLine(t, sc, wait); got != want {
			t.Fatalf("message %d: python read %d hex chars %.40q..., want %d %.40q...", i, len(got), got, len(want), want)
		}
	}
	var lost uint32
	for i := 0; i < n; i++ {
		lost += pyGap(i)
	}
	if l, want := pyLine(t, sc, wait), fmt.Sprintf("# lost %d", lost); l != want {
		t.Errorf("last line %q, want %q: the gap frames' losses", l, want)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	// The Python client left: only the Go publisher remains.
	if ms := r.Members(); len(ms) != 1 || ms[0].Role != RolePublisher {
		t.Errorf("members after the python subscriber left: %+v", ms)
	}
}

func TestPythonPublisher(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		reserved bool // a Reserver holds the queue until the Python publisher joined
	}{
		{"pubsub-block", Config{Type: TypePubSub, Policy: PolicyBlock}, false},
		{"pubsub-block, reserved", Config{Type: TypePubSub, Policy: PolicyBlock}, true},
		{"stream", Config{Type: TypeStream}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 400
			cfg := tc.cfg
			cfg.Capacity, cfg.MaxMessage, cfg.MemberSlots, cfg.Lease = 4096, 1000, 8, 5*time.Second
			r, path := pyRing(t, cfg)
			// The reader joins first, so the Python publisher must respect
			// its cursor (pubsub: Limit from the member table; stream:
			// Release). A busy reader keeps up without futex wake-ups,
			// which Python cannot send.
			var next func(context.Context, []byte) ([]byte, error)
			if cfg.Type == TypeStream {
				rd, err := r.NewReader(ReaderOptions{Idle: IdleBusy})
				if err != nil {
					t.Fatal(err)
				}
				next = rd.Next
			} else {
				s, err := r.NewSubscriber(SubscriberOptions{Idle: IdleBusy})
				if err != nil {
					t.Fatal(err)
				}
				next = s.Next
			}
			var res *Publisher
			if tc.reserved {
				res = reserver(t, r)
			}
			var in strings.Builder
			for i := 0; i < n; i++ {
				in.WriteString(hex.EncodeToString(pyMsg(i, cfg.MaxMessage)) + "\n")
			}
			sc, wait := pyClient(t, strings.NewReader(in.String()), "pub", path, "--hex", "--timeout", "120")
			if l := pyLine(t, sc, wait); !strings.HasPrefix(l, "# joined slot ") {
				t.Fatalf("first line %q, want the join", l)
			}
			if res != nil {
				// The Python publisher waits for the reservation (the Go
				// one would sleep on SpaceFutex; Python polls).
				start := atomic.LoadUint64(&r.queues[0].Tail)
				for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if tail := atomic.LoadUint64(&r.queues[0].Tail); tail != start {
						t.Fatalf("the Python publisher published (tail %#x, was %#x) while a Reserver held the queue", tail, start)
					}
				}
				must(t, res.Reserve(false))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var got []byte
			for i := 0; i < n; i++ {
				var err error
				if got, err = next(ctx, got); err != nil {
					t.Fatalf("message %d: %v (python: %v)", i, err, wait())
				}
				if want := pyMsg(i, cfg.MaxMessage); string(got) != string(want) {
					t.Fatalf("message %d: got %d bytes %.20x..., want %d bytes %.20x...", i, len(got), got, len(want), want)
				}
			}
			if l := pyLine(t, sc, wait); l != fmt.Sprintf("# published %d", n) {
				t.Errorf("last line %q, want # published %d", l, n)
			}
			if err := wait(); err != nil {
				t.Fatal(err)
			}
			if res != nil {
				res.Close()
			}
			if ms := r.Members(); len(ms) != 1 || ms[0].Role != RoleSubscriber {
				t.Errorf("members after the python publisher left: %+v", ms)
			}
			// Nothing more arrives: the Python client published exactly n.
			if tail := pos(atomic.LoadUint64(&r.queues[0].Tail)); tail.seq() != n {
				t.Errorf("tail sequence %d after %d messages", tail.seq(), n)
			}
		})
	}
}
