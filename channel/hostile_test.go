package channel

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// TestStuckSlotsExpire: member slots left in states that would never expire
// on their own (a lease stored in the future, a joiner that died between
// taking a slot and storing its first lease, a reaper that died while
// evicting) are freed by Reap within a few leases, so that they cannot hold
// a channel busy forever.
func TestStuckSlotsExpire(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state uint32
		lease func(now uint64) uint64
	}{
		{"lease an hour ahead", MemberActive, func(now uint64) uint64 { return now + uint64(time.Hour) }},
		{"lease two leases ahead", MemberActive, func(now uint64) uint64 { return now + 2*uint64(stallLease) }},
		{"joiner died in init", MemberInit, func(uint64) uint64 { return 0 }},
		{"joiner died in init, lease ahead", MemberInit, func(now uint64) uint64 { return now + uint64(time.Hour) }},
		{"evicter died", MemberDead, func(uint64) uint64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, Config{Capacity: MinCapacity, MemberSlots: 4, Lease: stallLease})
			s := r.slot(2)
			atomic.StoreUint32(&s.Role, RoleSubscriber)
			atomic.StoreUint64(&s.Lease, tc.lease(uint64(monotonic())))
			atomic.StoreUint32(&s.State, tc.state)
			eventually(t, 20*stallLease, func() error {
				r.Reap()
				if st := atomic.LoadUint32(&s.State); st != MemberFree {
					return fmt.Errorf("slot still in state %d, lease %d ns from now", st, int64(atomic.LoadUint64(&s.Lease))-monotonic())
				}
				return nil
			})
		})
	}
}

// TestOpenLoadsOnce: a peer flipping descriptor fields between a valid
// and an invalid value while a client opens the ring must never make Open
// accept the invalid one (it used to validate a field and then load it
// again), and a ring Open accepted must read and reap without panicking.
func TestOpenLoadsOnce(t *testing.T) {
	const opens = 20_000
	for _, tc := range []struct {
		name string
		off  uintptr // the u64 field flipped
		bad  func(good uint64) uint64
	}{
		{"data offset", OffDataOffset, func(good uint64) uint64 { return good + 4096 }},
		{"file size", OffFileSize, func(good uint64) uint64 { return good - 4096 }},
		{"capacity", OffCapacity, func(good uint64) uint64 { return good * 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, MemberSlots: 8})
			mem := want.Bytes()
			field := (*uint64)(unsafePointer(&mem[tc.off]))
			good := atomic.LoadUint64(field)
			bad := tc.bad(good)
			var stop atomic.Bool
			done := make(chan struct{})
			go func() {
				defer close(done)
				runtime.LockOSThread()
				for !stop.Load() {
					atomic.StoreUint64(field, bad)
					atomic.StoreUint64(field, good)
				}
			}()
			accepted := 0
			for i := 0; i < opens; i++ {
				r, err := Open(mem)
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("open %d: %v, want ErrCorrupt", i, err)
					}
					continue
				}
				accepted++
				if r.data != want.data || r.capacity != want.capacity || len(r.mem) != len(want.mem) {
					stop.Store(true)
					<-done
					t.Fatalf("open %d accepted data %v capacity %d size %d, validated %v %d %d",
						i, r.data, r.capacity, len(r.mem), want.data, want.capacity, len(want.mem))
				}
			}
			stop.Store(true)
			<-done
			if accepted == 0 {
				t.Fatalf("no open of %d saw the valid value: the test proves nothing", opens)
			}
		})
	}
}

// TestReapPadsOnce: the claim of a dead publisher is padded with one frame
// whatever it held (its Seq the sequence after the claim), so that a
// reader passes it in one step and Reap's work does not grow with the
// claim; readers go on at the right sequence.
func TestReapPadsOnce(t *testing.T) {
	r := newRing(t, Config{Capacity: 64 << 10, MaxMessage: 1000, Lease: stallLease})
	s := mustSub(t, r)
	a := mustPub(t, r)
	sizes := make([]int, 40)
	b, err := a.ClaimBatch(context.Background(), sizes)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != len(sizes) {
		t.Fatalf("claimed %d frames, want %d", b.Len(), len(sizes))
	}
	stall(t, r, a.m)
	r.Reap()
	fp := b.fp
	w := atomic.LoadUint64(r.commitWord(0, r.offset(fp.units())))
	claim := uint32(len(sizes)) * FrameHeaderLen
	if uint32(w) != fp.units() || uint32(w>>32) != FlagPadding|(claim-FrameHeaderLen) {
		t.Fatalf("commit word at the dead claim %#x, want one padding frame of %d bytes", w, claim)
	}
	if seq := atomic.LoadUint32(&r.frame(0, r.offset(fp.units())).Seq); seq != fp.seq()+uint32(len(sizes)) {
		t.Fatalf("padding Seq %d, want %d", seq, fp.seq()+uint32(len(sizes)))
	}
	p := mustPub(t, r)
	if err := p.TryPublish([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TryNext(nil); err != nil || string(got) != "after" {
		t.Fatalf("read after the padded claim: %q, %v", got, err)
	}
	if s.cur.seq() != fp.seq()+uint32(len(sizes))+1 {
		t.Fatalf("subscriber at sequence %d, want %d", s.cur.seq(), fp.seq()+uint32(len(sizes))+1)
	}
}

// TestReapHostileClaims: slots a client wrote to look like many dead
// publishers, each claiming the whole ring and nearly a message per unit,
// with many subscribers parked inside the claims, cost one Reap pass one
// padding frame, not one per claimed message per subscriber.
func TestReapHostileClaims(t *testing.T) {
	const m = 64 // dead publishers, and as many parked subscribers
	r := newRing(t, Config{Capacity: 64 << 10, MemberSlots: 2 * m})
	start := r.capUnits
	atomic.StoreUint64(&r.queues[0].Tail, uint64(mkpos(0, start+r.capUnits)))
	now := uint64(monotonic())
	for i := uint32(0); i < m; i++ {
		s := r.slot(i)
		atomic.StoreUint32(&s.Role, RoleSubscriber)
		atomic.StoreUint64(&s.Lease, now)
		atomic.StoreUint64(&s.Cursor, uint64(mkpos(0, start+m-i)))
		atomic.StoreUint32(&s.State, MemberActive)
		p := r.slot(m + i)
		atomic.StoreUint32(&p.Role, RolePublisher)
		atomic.StoreUint64(&p.Lease, 1) // long expired
		atomic.StoreUint64(&p.Pending, uint64(mkpos(0, start)))
		atomic.StoreUint64(&p.PendingLen, r.capacity)
		atomic.StoreUint64(&p.Cursor, uint64(mkpos(r.capUnits-m-1, start+r.capUnits)))
		atomic.StoreUint32(&p.State, MemberActive)
	}
	if err := r.Check(); err != nil {
		t.Fatalf("Check rejects the ring: %v", err)
	}
	r.Reap()
	frames := 0
	for p := mkpos(0, start); p.units() != start+r.capUnits; frames++ {
		w := atomic.LoadUint64(r.commitWord(0, r.offset(p.units())))
		if uint32(w) != p.units() || uint32(w>>32)&FlagPadding == 0 {
			t.Fatalf("frame %d at %d: commit word %#x, want padding", frames, p.units(), w)
		}
		p = mkpos(p.seq(), p.units()+(FrameHeaderLen+uint32(w>>32)&LengthMask)>>unitShift)
	}
	if frames != 1 {
		t.Errorf("the dead claims were padded with %d frames, want 1", frames)
	}
	if n := atomic.LoadUint64(&r.queues[0].Reaped); n != 1 {
		t.Errorf("Reaped %d, want 1: the claims overlap, one padding unblocks them all", n)
	}
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }
