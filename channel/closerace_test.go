package channel

import (
	"context"
	"flag"
	"runtime/debug"
	"sync"
	"testing"
)

var closeRaceRounds = flag.Int("closerace.rounds", 1000, "rounds of TestMemberCloseRingClose per member kind, concurrently")

// TestMemberCloseRingClose: a member's Close after its ring's Close
// (which unmapped the memory) does nothing, and one that runs at the same
// time (two goroutines of a program shutting down) neither touches the
// gone mapping nor fails: the ring's Close waits for it. A publisher
// closes with a claim outstanding, which it pads. The concurrent case
// runs many times, each on a fresh mapping; a fault (read as a panic
// here, not a crash) fails the test.
func TestMemberCloseRingClose(t *testing.T) {
	ctx := context.Background()
	type closer interface{ Close() error }
	for _, tc := range []struct {
		name string
		typ  Type
		join func(r *Ring) (closer, error)
	}{
		{"publisher", TypePubSub, func(r *Ring) (closer, error) { return r.NewPublisher(PublisherOptions{}) }},
		{"publisher with a claim", TypePubSub, func(r *Ring) (closer, error) {
			p, err := r.NewPublisher(PublisherOptions{})
			if err == nil {
				_, err = p.Claim(ctx, 100)
			}
			return p, err
		}},
		{"subscriber", TypePubSub, func(r *Ring) (closer, error) { return r.NewSubscriber(SubscriberOptions{}) }},
		{"stream reader", TypeStream, func(r *Ring) (closer, error) { return r.NewReader(ReaderOptions{}) }},
	} {
		_, path := newShmRing(t, Config{Type: tc.typ, Capacity: 4096})
		open := func(t *testing.T) (*Ring, closer) { // a fresh mapping and its member
			t.Helper()
			r, err := MapFile(path)
			if err != nil {
				t.Fatal(err)
			}
			m, err := tc.join(r)
			if err != nil {
				t.Fatal(err)
			}
			return r, m
		}
		t.Run(tc.name+", after the ring's", func(t *testing.T) {
			r, m := open(t)
			if err := r.Close(); err != nil {
				t.Fatalf("ring Close: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Fatalf("member Close after the ring's: %v", err)
			}
		})
		t.Run(tc.name+", with the ring's", func(t *testing.T) {
			for round := range *closeRaceRounds {
				r, m := open(t)
				var wg sync.WaitGroup
				start := make(chan struct{})
				var memberErr, ringErr error
				var fault any
				wg.Add(2)
				go func() {
					defer wg.Done()
					defer func() { fault = recover() }()
					defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
					<-start
					memberErr = m.Close()
				}()
				go func() {
					defer wg.Done()
					<-start
					ringErr = r.Close()
				}()
				close(start)
				wg.Wait()
				if fault != nil {
					t.Fatalf("round %d: the member's Close touched the unmapped ring: %v", round, fault)
				}
				if memberErr != nil || ringErr != nil {
					t.Fatalf("round %d: member Close: %v; ring Close: %v", round, memberErr, ringErr)
				}
			}
		})
	}
}
