package mirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// expect waits until every tally counted want messages without error.
func expect(t *testing.T, want int, tallies map[string]*tally) {
	t.Helper()
	expectWithin(t, 60*time.Second, want, tallies)
}

// TestPubSubFanOut: messages published on A reach subscribers on A, B
// and C, once each, in order, intact; with overwrite a small ring may lap
// the mirror, and every message is then either received or counted lost
// by the subscriber itself (its ring's laps and its link's gap frames).
func TestPubSubFanOut(t *testing.T) {
	for _, tc := range []struct {
		policy   channel.Policy
		capacity uint64
	}{
		{channel.PolicyBlock, 64 << 10},
		{channel.PolicyOverwrite, 1 << 20},
		{channel.PolicyOverwrite, 16 << 10},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.policy, tc.capacity), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, channel.Config{Policy: tc.policy, Capacity: tc.capacity}, nil, "a", "b", "c")
			gaps := tc.policy == channel.PolicyOverwrite
			tallies := map[string]*tally{}
			for _, h := range c.hosts {
				tallies[h.name] = subscribe(ctx, t, mapRing(t, h), gaps)
			}
			c.linksUp()
			const n = 5000
			if err := publish(ctx, mapRing(t, c.hosts[0]), 1, n, 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 60*time.Second, func() error {
				for _, h := range c.hosts {
					got, lost, err := tallies[h.name].accounted()
					if err != nil {
						t.Fatalf("subscriber on %s: %v", h.name, err)
					}
					if got != n {
						return fmt.Errorf("subscriber on %s: %d of %d messages received or lost", h.name, got, n)
					}
					if !gaps && lost != 0 {
						t.Fatalf("subscriber on %s lost %d messages of a block channel", h.name, lost)
					}
				}
				return nil
			})
		})
	}
}

// TestPublishersOnTwoHosts: publishers on A and B at once; subscribers on
// both hosts get every message of each, in each publisher's order.
//
// The rings hold every message: with block, publishers on both hosts
// that fill both rings at once can stall the mirror (each host's
// importer waits for room that its ring keeps for the other host), a
// known limit (docs/remote.md).
func TestPublishersOnTwoHosts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Capacity: 4 << 20}, nil, "a", "b")
	tallies := map[string]*tally{}
	for _, h := range c.hosts {
		tallies[h.name] = subscribe(ctx, t, mapRing(t, h), false)
	}
	c.linksUp()
	const n = 4000
	errs := make(chan error, 2)
	for i, h := range c.hosts {
		r := mapRing(t, h)
		go func() { errs <- publish(ctx, r, uint32(i+1), n, 0) }()
	}
	for range c.hosts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	expect(t, 2*n, tallies)
}

// TestStreamSharedAcrossHosts: a writer on A; readers on A and B share
// the records, none twice and none lost.
func TestStreamSharedAcrossHosts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Type: channel.TypeStream, Capacity: 64 << 10}, nil, "a", "b")
	c.linksUp()
	const n = 20000
	seen := make(chan uint32, n+100)
	var wg sync.WaitGroup
	for _, h := range c.hosts {
		r := mapRing(t, h)
		for range 2 {
			rd, err := r.NewReader(channel.ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer rd.Close()
				var buf []byte
				for {
					b, err := rd.Next(ctx, buf)
					if err != nil {
						return
					}
					buf = b
					_, seq, err := parse(b)
					if err != nil {
						t.Error(err)
						return
					}
					seen <- seq
				}
			}()
		}
	}
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the rings are unmapped
	if err := publish(ctx, mapRing(t, c.hosts[0]), 1, n, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]int, n)
	deadline := time.After(60 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case seq := <-seen:
			if seq >= n || got[seq] != 0 {
				t.Fatalf("record %d taken twice or out of range", seq)
			}
			got[seq]++
		case <-deadline:
			t.Fatalf("%d of %d records taken", i, n)
		}
	}
	// Nothing more arrives: no record was taken twice.
	select {
	case seq := <-seen:
		t.Fatalf("record %d taken again", seq)
	case <-time.After(200 * time.Millisecond):
	}
	st := c.hosts[1].m.Stats()[0]
	if st.Messages == 0 {
		t.Errorf("b took no record from a (stats %+v): the work was not shared", st)
	}
}

// TestLinkCut: the link is cut again and again while A publishes; B's
// subscriber gets every message once, in order (block and stream lose
// nothing), and the cuts are counted.
func TestLinkCut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Capacity: 64 << 10}, nil, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	tl := subscribe(ctx, t, mapRing(t, b), false)
	c.linksUp()
	const n, cuts = 20000, 5
	done := make(chan error, 1)
	go func() { done <- publish(ctx, mapRing(t, a), 1, n, 0) }()
	for i := 0; i < cuts; i++ {
		waitFor(t, 30*time.Second, func() error {
			if got, err := tl.count(); err != nil || got < (i+1)*n/(cuts+1) {
				return fmt.Errorf("b has %d messages before cut %d (%v)", got, i, err)
			}
			return nil
		})
		if i%2 == 0 {
			a.cut(t, "b")
		} else {
			b.cut(t, "a")
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expect(t, n, map[string]*tally{"b": tl})
	waitFor(t, 10*time.Second, func() error {
		if st := b.stat("a"); st.Reconnects < cuts || st.Losses != 0 {
			return fmt.Errorf("b's link to a: %+v, want %d reconnects and no loss", st, cuts)
		}
		return nil
	})
}

// TestOverwriteLossCounted: while the link is down, A's overwrite ring
// laps what B has not received; when it comes back, the messages B's
// subscriber got, plus those it counts lost (in its ring and, by gap
// frames, on the link), are exactly what A published, in order.
func TestOverwriteLossCounted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Policy: channel.PolicyOverwrite, Capacity: 16 << 10}, func(o *Options) {
		o.MinBackoff, o.MaxBackoff = 300*time.Millisecond, 300*time.Millisecond
	}, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	tl := subscribe(ctx, t, mapRing(t, b), true)
	c.linksUp()
	ra := mapRing(t, a)
	accounted := func(want uint64) { accountedOnB(t, tl, want) }
	const n = 1000
	if err := publish(ctx, ra, 1, n, 0); err != nil {
		t.Fatal(err)
	}
	accounted(n)
	// a dials b (its name sorts first): cut from b's side and publish
	// several laps of a's ring before a dials again.
	before := b.stat("a").Losses
	b.cut(t, "a")
	p, err := ra.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const more = 3000
	for i := n; i < n+more; i++ {
		if err := p.TryPublish(message(1, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	accounted(n + more)
	if b.stat("a").Losses == before {
		t.Fatalf("the link lost nothing while a's ring lapped it %d times: %+v", more*100/(16<<10), b.stat("a"))
	}
}

// accountedOnB waits until what tl (a subscriber on b) got, plus what
// it counts lost (its own ring's losses and the link's, which gap frames
// report), is want: each message a published counted once.
func accountedOnB(t *testing.T, tl *tally, want uint64) {
	t.Helper()
	waitFor(t, 30*time.Second, func() error {
		got, lost, err := tl.accounted()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			return fmt.Errorf("b: %d of %d messages received or lost (%d lost)", got, want, lost)
		}
		return nil
	})
}

// TestOverwriteLossStaleAck: a's acknowledged position is behind what b
// received (the Acks of the last batches went down with the link, as on
// a loaded host) and a's overwrite ring laps both while a's agent is
// away: b counts as lost only the messages it never received, once.
func TestOverwriteLossStaleAck(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Policy: channel.PolicyOverwrite, Capacity: 16 << 10}, nil, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	tl := subscribe(ctx, t, mapRing(t, b), true)
	c.linksUp()
	ra := mapRing(t, a)
	const early, n, more = 100, 1000, 3000
	if err := publish(ctx, ra, 1, early, 0); err != nil {
		t.Fatal(err)
	}
	accountedOnB(t, tl, early)
	acked := a.m.state.path("acked", "b", chanKey{NS: testNS, Ch: testCh})
	stale, err := os.ReadFile(acked)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decodeMark(stale); !ok {
		t.Fatalf("a's acknowledged position for b is no mark: %x", stale)
	}
	p, err := ra.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := early; i < n; i++ {
		if err := p.Publish(ctx, message(1, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	accountedOnB(t, tl, n)
	c.stopHost(a)
	if err := os.WriteFile(acked, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := n; i < n+more; i++ {
		if err := p.TryPublish(message(1, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.restartHost(a)
	accountedOnB(t, tl, n+more)
	if b.stat("a").Losses == 0 {
		t.Fatalf("b's link lost nothing while a's ring lapped it %d times: %+v", more*100/(16<<10), b.stat("a"))
	}
}

// TestAgentRestart: the agent of one host stops and starts again (a new
// registry recovered from the state directory, a new mirror) while A's
// publisher goes on; subscribers and readers that map the rings
// themselves get every message once, in order: block and stream lose
// nothing across a restart of either side.
func TestAgentRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     channel.Type
		restart int // index of the host restarted
	}{
		{"block/receiver", channel.TypePubSub, 1},
		{"block/origin", channel.TypePubSub, 0},
		{"stream/receiver", channel.TypeStream, 1},
		{"stream/origin", channel.TypeStream, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, channel.Config{Type: tc.typ, Capacity: 64 << 10}, nil, "a", "b")
			a, b := c.hosts[0], c.hosts[1]
			const n = 20000
			var received func() (int, error)
			lost, gaps := func() uint64 { return 0 }, func() uint64 { return 0 }
			if tc.typ == channel.TypePubSub {
				tl := subscribe(ctx, t, mapRing(t, b), false)
				received = tl.count
				lost = func() uint64 { tl.mu.Lock(); defer tl.mu.Unlock(); return tl.lost }
				gaps = func() uint64 { tl.mu.Lock(); defer tl.mu.Unlock(); return tl.gaps }
			} else {
				// Readers on b only: every record crosses the link.
				tl := &tally{}
				rd, err := mapRing(t, b).NewReader(channel.ReaderOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				wg.Add(1)
				t.Cleanup(wg.Wait) // before the ring is unmapped
				go func() {
					defer wg.Done()
					defer rd.Close()
					var buf []byte
					for {
						m, err := rd.Next(ctx, buf)
						if err != nil {
							return
						}
						buf = m
						tl.add(m, false)
					}
				}()
				received = tl.count
			}
			ra := mapRing(t, a)
			c.linksUp()
			done := make(chan error, 1)
			t.Cleanup(func() { cancel(); <-done }) // before ra is unmapped
			go func() { done <- publish(ctx, ra, 1, n, 0) }()
			waitFor(t, 30*time.Second, func() error {
				if got, err := received(); err != nil || got < n/3 {
					return fmt.Errorf("b has %d messages (%v); a: %+v %+v; b: %+v %+v", got, err, a.m.Stats(), ra.QueueStats(0), b.m.Stats(), mapRing(t, b).QueueStats(0))
				}
				return nil
			})
			c.restartHost(c.hosts[tc.restart])
			waitFor(t, 60*time.Second, func() error {
				got, err := received()
				if err != nil {
					// Which loss it was: the subscriber's own (lapped) or
					// the link's (gap frames), and what each side saw.
					t.Fatalf("%v; subscriber lost %d (gaps %d); a: %+v %+v; b: %+v %+v", err, lost(), gaps(),
						a.m.Stats(), ra.QueueStats(0), b.m.Stats(), mapRing(t, b).QueueStats(0))
				}
				if got != n {
					return fmt.Errorf("b has %d of %d messages; a: %+v %+v; b: %+v %+v", got, n, a.m.Stats(), ra.QueueStats(0), b.m.Stats(), mapRing(t, b).QueueStats(0))
				}
				return nil
			})
			// Nothing more comes: no duplicate behind the count.
			time.Sleep(200 * time.Millisecond)
			if got, err := received(); got != n || err != nil {
				t.Fatalf("b has %d of %d messages (%v)", got, n, err)
			}
		})
	}
}

// TestUnknownPeerRefused: an agent of the cluster's CA that a's plan does
// not list never gets a link to a, and a's link to b carries on.
func TestUnknownPeerRefused(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{}, nil, "b", "c")
	b := c.hosts[0]
	// "a" sorts first, so it dials b.
	x := &host{name: "a", dir: testenv.ShmDir(t, "mirror-x-")}
	c.startRegistry(x)
	c.startMirror(x)
	t.Cleanup(func() { c.stopHost(x) })
	if err := x.m.Apply(Plan{Peers: []Peer{{Name: "b", Addr: b.addr}}}); err != nil {
		t.Fatal(err)
	}
	tl := subscribe(ctx, t, mapRing(t, c.hosts[1]), false)
	c.linksUp()
	if err := publish(ctx, mapRing(t, b), 1, 100, 0); err != nil {
		t.Fatal(err)
	}
	expect(t, 100, map[string]*tally{"c": tl})
	if st := x.stat("b"); st.State == StateUp || st.Messages != 0 {
		t.Fatalf("an agent b's plan does not list got a link: %+v", st)
	}
	if err := b.m.Authorize("a"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Authorize(a) = %v, want ErrUnknownPeer", err)
	}
}
