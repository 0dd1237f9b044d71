package channel

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestReserve: while the queue's Reserve word names a live publisher,
// every other publisher of a block pubsub queue finds the ring full (a
// blocked one is woken when it clears) and Reserver publishers go on; a
// word that names no live publisher is void and cleared; other queues
// ignore it.
func TestReserve(t *testing.T) {
	block := Config{Capacity: MinCapacity, MemberSlots: 8, Lease: stallLease}
	for _, tc := range []struct {
		name string
		cfg  Config
		// set reserves queue 0 of r, returning what clears it (nil: the
		// word is void already).
		set      func(t *testing.T, r *Ring) func()
		held     bool // an ordinary publisher finds the ring full
		clearsTo bool // the ordinary publisher's look clears the word
	}{
		{name: "a Reserver holds it", cfg: block, held: true, set: func(t *testing.T, r *Ring) func() {
			p := reserver(t, r)
			return func() { must(t, p.Reserve(false)) }
		}},
		{name: "a Reserver that closes gives it up", cfg: block, held: true, set: func(t *testing.T, r *Ring) func() {
			p := reserver(t, r)
			return func() { p.Close() }
		}},
		{name: "a Reserver that dies gives it up when reaped", cfg: block, held: true, set: func(t *testing.T, r *Ring) func() {
			p := reserver(t, r)
			return func() { p.m.dead.Store(true) } // no heartbeats: its lease runs out
		}},
		{name: "two Reservers: it stays held until both give it up", cfg: block, held: true, set: func(t *testing.T, r *Ring) func() {
			b, a := reserver(t, r), reserver(t, r)
			return func() {
				must(t, b.Reserve(false)) // the word named b: now clear
				// a claims (its records go first), and that sets it again.
				must(t, a.TryPublish([]byte("a")))
				if v, ok := r.Reserved(0); !ok || v != a.Slot() {
					t.Fatalf("after a's claim the word names slot %d (%v), want a's %d", v, ok, a.Slot())
				}
				must(t, a.Reserve(false))
			}
		}},
		{name: "a client names its own live publisher", cfg: block, held: true, set: func(t *testing.T, r *Ring) func() {
			p, err := r.NewPublisher(PublisherOptions{})
			must(t, err)
			atomic.StoreUint32(&r.queues[0].Reserve, p.Slot()+1)
			return func() { p.Close() } // left without clearing: void
		}},
		{name: "garbage beyond the member table", cfg: block, clearsTo: true, set: raw(0xdeadbeef)},
		{name: "garbage: all ones", cfg: block, clearsTo: true, set: raw(0xffffffff)},
		{name: "garbage: the table's size", cfg: block, clearsTo: true, set: raw(8 + 1)},
		{name: "a free slot", cfg: block, clearsTo: true, set: raw(6 + 1)},
		{name: "a subscriber's slot", cfg: block, clearsTo: true, set: func(t *testing.T, r *Ring) func() {
			s, err := r.NewSubscriber(SubscriberOptions{})
			must(t, err)
			t.Cleanup(func() { s.Close() })
			atomic.StoreUint32(&r.queues[0].Reserve, s.m.idx+1)
			return nil
		}},
		{name: "overwrite ignores it", cfg: Config{Capacity: MinCapacity, MemberSlots: 8, Lease: stallLease, Policy: PolicyOverwrite}, set: func(t *testing.T, r *Ring) func() {
			p := reserver(t, r)
			atomic.StoreUint32(&r.queues[0].Reserve, p.Slot()+1) // Reserve does nothing there
			return nil
		}},
		{name: "stream ignores it", cfg: Config{Type: TypeStream, Capacity: MinCapacity, MemberSlots: 8, Lease: stallLease}, set: raw(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, tc.cfg)
			clear := tc.set(t, r)
			p, err := r.NewPublisher(PublisherOptions{})
			must(t, err)
			defer p.Close()
			err = p.TryPublish([]byte("ordinary"))
			if tc.held != errors.Is(err, ErrWouldBlock) || !tc.held && err != nil {
				t.Fatalf("an ordinary publisher's TryPublish: %v, want the ring full: %v", err, tc.held)
			}
			if _, set := r.Reserved(0); tc.clearsTo && set {
				t.Fatal("a void word was not cleared")
			}
			if !tc.held {
				return
			}
			// A Reserver goes on meanwhile.
			rp := reserver(t, r)
			must(t, rp.Reserve(false)) // it joined to publish, not to hold
			must(t, rp.TryPublish([]byte("reserver")))
			// A blocked publisher waits, and publishes once it clears.
			done := make(chan error, 1)
			go func() { done <- p.Publish(context.Background(), []byte("waited")) }()
			eventually(t, 10*time.Second, func() error {
				if w := atomic.LoadUint32(&r.queues[0].SpaceWaiters); w == 0 {
					return errors.New("the publisher does not wait yet")
				}
				return nil
			})
			select {
			case err := <-done:
				t.Fatalf("published while reserved: %v", err)
			default:
			}
			clear()
			eventually(t, 20*stallLease, func() error {
				r.Reap()
				select {
				case err := <-done:
					return err
				default:
					return errors.New("still waiting")
				}
			})
			if v, set := r.Reserved(0); set {
				t.Errorf("the word still names slot %d", v)
			}
		})
	}
}

// TestReserveNeedsOption: Reserve is refused to an ordinary publisher,
// and a publisher that joins a slot named by the word clears it (a
// reservation of its slot's former owner).
func TestReserveNeedsOption(t *testing.T) {
	r := newRing(t, Config{Capacity: MinCapacity, MemberSlots: 4})
	p, err := r.NewPublisher(PublisherOptions{})
	must(t, err)
	if err := p.Reserve(true); !errors.Is(err, ErrConfig) {
		t.Fatalf("Reserve of an ordinary publisher: %v, want ErrConfig", err)
	}
	p.Close()
	atomic.StoreUint32(&r.queues[0].Reserve, 1) // slot 0, free now
	q, err := r.NewPublisher(PublisherOptions{})
	must(t, err)
	defer q.Close()
	if q.Slot() != 0 {
		t.Fatalf("joined slot %d, want the free slot 0", q.Slot())
	}
	if v, set := r.Reserved(0); set {
		t.Fatalf("the word names slot %d after its new owner joined", v)
	}
	if err := q.TryPublish([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestClearReservations: what the agent does at recovery clears every
// queue's word, whatever it held.
func TestClearReservations(t *testing.T) {
	for _, typ := range []Type{TypePubSub, TypeStream} {
		t.Run(typ.String(), func(t *testing.T) {
			r := newRing(t, Config{Type: typ, Capacity: MinCapacity, MemberSlots: 4})
			for q := range r.Queues() {
				atomic.StoreUint32(&r.queues[q].Reserve, uint32(q+1))
			}
			r.ClearReservations()
			for q := range r.Queues() {
				if v, set := r.Reserved(q); set {
					t.Errorf("queue %d: the word names slot %d", q, v)
				}
			}
		})
	}
}

// reserver joins r as a Reserver publisher holding queue 0, closed at
// cleanup.
func reserver(t *testing.T, r *Ring) *Publisher {
	t.Helper()
	p, err := r.NewPublisher(PublisherOptions{Reserver: true})
	must(t, err)
	t.Cleanup(func() { p.Close() })
	must(t, p.Reserve(true))
	return p
}

// raw stores v in queue 0's Reserve word, as a client may.
func raw(v uint32) func(*testing.T, *Ring) func() {
	return func(_ *testing.T, r *Ring) func() {
		atomic.StoreUint32(&r.queues[0].Reserve, v)
		return nil
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(fmt.Errorf("unexpected: %w", err))
	}
}
