package channel

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// TestEvictedSubscriberReads: a block subscriber that stalled past its
// lease is evicted (Reap here; publishers that need the room do it too);
// whether or not the ring then laps its cursor, before its read or while
// it reads a frame, the read says ErrEvicted: the subscriber must join
// again. One lapped while it read found a newer frame's bytes where the
// frame's Seq was, and reported ErrCorrupt: a broken ring, to its user.
func TestEvictedSubscriberReads(t *testing.T) {
	ctx := context.Background()
	for _, read := range []struct {
		name string
		read func(s *Subscriber) error
	}{
		{"Next", func(s *Subscriber) error { _, err := s.Next(ctx, nil); return err }},
		{"TryNext", func(s *Subscriber) error { _, err := s.TryNext(nil); return err }},
		{"Peek", func(s *Subscriber) error { _, err := s.Peek(ctx); return err }},
		{"TryPeek", func(s *Subscriber) error { _, err := s.TryPeek(); return err }},
		{"AppendNext", func(s *Subscriber) error { _, _, err := s.AppendNext(nil); return err }},
		{"Wait", func(s *Subscriber) error { return s.Wait(ctx) }},
		{"AppendBatch", func(s *Subscriber) error {
			_, _, err := s.AppendBatch(nil, AppendOptions{Limit: 1 << 20})
			return err
		}},
		{"AppendBatch skipping", func(s *Subscriber) error {
			_, _, err := s.AppendBatch(nil, AppendOptions{Limit: 1 << 20, Skip: func(uint32, Position) bool { return true }})
			return err
		}},
		{"SkipIf", func(s *Subscriber) error {
			_, err := s.SkipIf(func(uint32, Position) bool { return true })
			return err
		}},
	} {
		for _, tc := range []struct {
			name   string
			lapped bool // publishers lap the evicted subscriber's cursor
			during bool // evicted and lapped while it reads, not before
		}{
			{"not lapped", false, false},
			{"lapped", true, false},
			{"lapped while reading", true, true},
		} {
			t.Run(read.name+", "+tc.name, func(t *testing.T) {
				r := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, Lease: stallLease})
				s := mustSub(t, r)
				p := mustPub(t, r)
				for i := range 3 {
					if err := p.TryPublish(stallMsg(i)); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.TryNext(nil); err != nil {
					t.Fatal(err)
				}
				stall(t, r, s.m)
				evict := func() {
					if r.Reap() != 1 {
						t.Fatal("Reap evicted no one")
					}
					if tc.lapped {
						for i := 3; i < 80; i++ { // more than a lap of 4 KiB
							if err := p.TryPublish(stallMsg(i)); err != nil {
								t.Fatalf("publish %d: %v", i, err)
							}
						}
					}
				}
				evictWhen(t, tc.during, evict)
				if err := read.read(s); !errors.Is(err, ErrEvicted) {
					t.Fatalf("%s after eviction: %v, want ErrEvicted", read.name, err)
				}
				if testHookRead != nil {
					t.Fatal("the subscriber never read a frame: the test tested nothing")
				}
			})
		}
	}
}

// TestEvictedStreamReaderReads: a stream reader that stalled past its
// lease is evicted, and other readers take records on while writers reuse
// the space; its read then says ErrEvicted, whether the eviction came
// before the read or while it read a frame. One evicted while it read a
// frame went on to the next record: it announced a take in a slot that
// was no longer its own (a record a reaper can then never release) and
// took the record as if it were still a member.
func TestEvictedStreamReaderReads(t *testing.T) {
	ctx := context.Background()
	for _, read := range []struct {
		name string
		read func(rd *Reader) ([]byte, error)
	}{
		{"Next", func(rd *Reader) ([]byte, error) { return rd.Next(ctx, nil) }},
		{"TryNext", func(rd *Reader) ([]byte, error) { return rd.TryNext(nil) }},
	} {
		for _, during := range []bool{false, true} {
			name := read.name + ", evicted before the read"
			if during {
				name = read.name + ", evicted while reading"
			}
			t.Run(name, func(t *testing.T) {
				r := newRing(t, Config{Type: TypeStream, Capacity: MinCapacity, MaxMessage: 1000, Lease: stallLease})
				w := mustPub(t, r)
				rd1, rd2 := mustReader(t, r), mustReader(t, r)
				for i := range 3 {
					if err := w.TryPublish(stallMsg(i)); err != nil {
						t.Fatal(err)
					}
				}
				stall(t, r, rd1.m)
				evict := func() {
					if r.Reap() != 1 {
						t.Fatal("Reap evicted no one")
					}
					// The other reader takes on, over more than a lap.
					for i := 3; i < 83; i++ {
						if err := w.TryPublish(stallMsg(i)); err != nil {
							t.Fatalf("publish %d: %v", i, err)
						}
						if _, err := rd2.TryNext(nil); err != nil {
							t.Fatalf("reader 2, message %d: %v", i-3, err)
						}
					}
				}
				evictWhen(t, during, evict)
				if got, err := read.read(rd1); !errors.Is(err, ErrEvicted) {
					t.Fatalf("%s after eviction: %x..., %v; want ErrEvicted", read.name, head(got), err)
				}
				if testHookRead != nil {
					t.Fatal("the reader never read a frame: the test tested nothing")
				}
				// Nothing was taken for the evicted reader: the other
				// reader has the three records left.
				for i := 80; i < 83; i++ {
					if got, err := rd2.TryNext(nil); err != nil || !bytes.Equal(got, stallMsg(i)) {
						t.Fatalf("reader 2, message %d: %v, got %x...", i, err, head(got))
					}
				}
			})
		}
	}
}

// evictWhen runs evict now, or, if during, from the next read of a
// frame's fields (testHookRead).
func evictWhen(t *testing.T, during bool, evict func()) {
	if !during {
		evict()
		return
	}
	testHookRead = func() {
		testHookRead = nil
		evict()
	}
	t.Cleanup(func() { testHookRead = nil })
}

// TestEvictedCloseKeepsNewMember: a member evicted after it stalled, whose
// slot a new member of the same process took, closes afterwards. Its
// Close must leave the new member's heartbeats alone: it took the slot's
// entry off the heartbeat list, whoever's it was, and the new member,
// never refreshed, was evicted a lease later.
func TestEvictedCloseKeepsNewMember(t *testing.T) {
	r := newRing(t, Config{Capacity: MinCapacity, MaxMessage: 1000, Lease: stallLease})
	old := mustSub(t, r)
	stall(t, r, old.m)
	if r.Reap() != 1 {
		t.Fatal("Reap evicted no one")
	}
	s := mustSub(t, r)
	if s.m.idx != old.m.idx {
		t.Fatalf("the new member took slot %d, not the evicted one's %d: the test tests nothing", s.m.idx, old.m.idx)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// Three leases: the new member is reaped unless its heartbeats go on.
	for end := time.Now().Add(3 * stallLease); time.Now().Before(end); time.Sleep(stallLease / 10) {
		r.Reap()
		if _, err := s.TryNext(nil); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("the new member: %v, want ErrWouldBlock (alive, nothing to read)", err)
		}
	}
}
