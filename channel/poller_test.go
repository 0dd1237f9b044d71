package channel

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threads is this process's thread count (/proc/self/status).
func threads(t testing.TB) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// TestWaitersOnManyRingsShareThreads: one subscriber asleep on each of
// many rings (an agent with a blocked file reader on each of its
// channels) must not keep a thread asleep per ring; each still gets its
// ring's message at once, and a cancelled one leaves at once.
func TestWaitersOnManyRingsShareThreads(t *testing.T) {
	const n = 300
	rings := make([]*Ring, n)
	pubs := make([]*Publisher, n)
	subs := make([]*Subscriber, n)
	for i := range rings {
		rings[i] = newRing(t, Config{Capacity: 4096, Lease: time.Hour})
		subs[i] = mustSub(t, rings[i])
		pubs[i] = mustPub(t, rings[i])
	}
	before := threads(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make([]chan uint64, n)
	var wg sync.WaitGroup
	for i, s := range subs {
		got[i] = make(chan uint64, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := s.Next(ctx, nil)
			if err != nil {
				got[i] <- ^uint64(0)
				return
			}
			got[i] <- binary.LittleEndian.Uint64(msg)
		}()
	}
	// Every reader announced its sleep: the rings' waiter counts say so.
	eventually(t, 10*time.Second, func() error {
		for i, r := range rings {
			if atomic.LoadUint32(&r.queues[0].DataWaiters) == 0 {
				return fmt.Errorf("ring %d: no waiter yet", i)
			}
		}
		return nil
	})
	during := threads(t)
	// A few direct sleepers, a poller per 127 rings, the runtime's own
	// spares: far fewer than one per ring.
	if limit := before + maxDirect + n/pollerWords + 1 + 16; during > limit {
		t.Errorf("%d readers asleep on %d rings: %d threads, %d before (want at most %d)", n, n, during, before, limit)
	}
	// Half get a message, each their own; the others are cancelled.
	for i := 0; i < n/2; i++ {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		if err := pubs[i].TryPublish(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n/2; i++ {
		select {
		case v := <-got[i]:
			if v != uint64(i) {
				t.Fatalf("reader %d got %d", i, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reader %d: no message 10 s after its publish", i)
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled readers still waiting 10 s later")
	}
	for i := n / 2; i < n; i++ {
		if v := <-got[i]; v != ^uint64(0) {
			t.Fatalf("reader %d got %d without a publish", i, v)
		}
	}
}

// TestHaveWaitv: the probe finds futex_waitv on a kernel that has it (5.16
// and later); a wrong probe would quietly fall back to a thread per waiter.
func TestHaveWaitv(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release[:], err)
	}
	want := major > 5 || major == 5 && minor >= 16
	if got := haveWaitv(); got != want {
		t.Errorf("haveWaitv() = %v on Linux %d.%d, want %v", got, major, minor, want)
	}
}
