package registry

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/internal/wait"
)

// TestHostileReservation: a client of block channel x writes x's Reserve
// word (ring-format.md section 9) and leaves. Only x's publishers are held
// back, and only while the word names a live publisher of x: the agent's
// publishers of another channel never are, the reaper clears a word that
// names nobody live, and an agent restarting (recovery) clears any.
func TestHostileReservation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lease   uint64 // of the publisher slot the word names: 0 none, 1 expired, else now
		word    uint32
		held    bool // x's publishers find the ring full until the reaper or recovery clears it
		recover bool // the agent restarts instead of reaping
	}{
		{name: "garbage", word: 0xdeadbeef},
		{name: "a free slot", word: 1},
		{name: "a dead publisher's slot", lease: 1, word: 1},
		{name: "a live publisher's slot, which then dies", lease: 2, word: 1, held: true},
		{name: "a live publisher's slot, then the agent restarts", lease: 2, word: 1, held: true, recover: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testenv.ShmDir(t, "shimmy-registry-test-")
			r := newRegistry(t, dir)
			ns, _ := r.CreateNamespace("ns", Attr{Mode: 0o755})
			cfg := channel.Config{Policy: channel.PolicyBlock, Capacity: 4096, Lease: 100 * time.Millisecond}
			if tc.recover {
				cfg.Lease = time.Minute // the slot stays live across the restart
			}
			x, err := ns.CreateChannel("x", CreateOptions{Config: &cfg})
			if err != nil {
				t.Fatal(err)
			}
			y, err := ns.CreateChannel("y", CreateOptions{Config: &cfg})
			if err != nil {
				t.Fatal(err)
			}
			mem := mapBacking(t, x.Backing().Path)
			if tc.lease != 0 {
				lease := tc.lease
				if lease > 1 {
					var ts unix.Timespec
					if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
						t.Fatal(err)
					}
					lease = uint64(ts.Nano())
				}
				slot := mem[channel.HeaderLen:]
				atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffRole])), channel.RolePublisher)
				atomic.StoreUint64((*uint64)(unsafe.Pointer(&slot[channel.MOffLease])), lease)
				atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[channel.MOffState])), channel.MemberActive)
			}
			atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[channel.OffQueues+channel.QOffReserve])), tc.word)

			// Another channel: unaffected.
			publishOn(t, y, nil)
			if tc.held {
				publishOn(t, x, channel.ErrWouldBlock)
			}
			if tc.recover {
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				r = newRegistry(t, dir)
				if x, err = r.Channel("ns", "x"); err != nil {
					t.Fatal(err)
				}
			}
			wait.Eventually(t, 10*time.Second, func() error {
				if !tc.recover { // after a restart the slot still looks live: no reaper clears it
					r.Reap()
				}
				h, err := x.Open()
				if err != nil {
					return err
				}
				defer h.Close()
				if v, set := h.Ring().Reserved(0); set {
					return fmt.Errorf("x's Reserve word still names slot %d", v)
				}
				return nil
			})
			publishOn(t, x, nil)
		})
	}
}

// publishOn has a new publisher of ch try to publish one message, and
// checks the outcome is want.
func publishOn(t *testing.T, ch *Channel, want error) {
	t.Helper()
	h, err := ch.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.TryPublish([]byte("m")); !errors.Is(err, want) && err != want {
		t.Fatalf("publish on %s: %v, want %v", ch.Name, err, want)
	}
}
