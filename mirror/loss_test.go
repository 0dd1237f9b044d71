package mirror

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestOverwriteLossToSubscribers: an overwrite ring on a laps the link
// to b while the link is down and while it is up; b's subscriber gets
// the link's losses in its own Lost (gap frames) besides what it loses
// in b's ring: what it received plus its Lost is exactly what a
// published, and its gap count is exactly the link's Losses.
func TestOverwriteLossToSubscribers(t *testing.T) {
	for _, tc := range []struct {
		name string
		down bool // cut the link while a publishes
	}{
		{"link down", true},
		{"link up", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, b, tl, p := lossyPair(ctx, t, 4096, func(o *Options) {
				o.MinBackoff, o.MaxBackoff = 300*time.Millisecond, 300*time.Millisecond
			})
			published := 0
			burst := func(n int) {
				for range n {
					if err := p.TryPublish(message(1, uint32(published))); err != nil {
						t.Fatal(err)
					}
					published++
				}
			}
			burst(100)
			accountedOnB(t, tl, uint64(published))
			// Bursts of many laps of a's ring, until the link lost some
			// (at once with the link down; with it up, when a's exporter
			// falls a lap behind).
			for round := 0; b.stat("a").Losses == 0; round++ {
				if round == 50 {
					t.Fatalf("the link lost nothing in %d bursts: %+v", round, b.stat("a"))
				}
				if tc.down {
					b.cut(t, "a") // a dials b (its name sorts first) 300 ms later
				}
				burst(2000)
				accountedOnB(t, tl, uint64(published))
			}
			_, lost, err := tl.accounted()
			tl.mu.Lock()
			gaps := tl.gaps
			tl.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if st := b.stat("a"); gaps != st.Losses || lost != gaps {
				t.Fatalf("b's subscriber lost %d, %d of them in gap frames; b's link lost %d", lost, gaps, st.Losses)
			}
		})
	}
}

// lossyPair starts hosts a and b sharing an overwrite channel of
// capacity on a (bigOnB), a subscriber on b and a publisher on a.
func lossyPair(ctx context.Context, t *testing.T, capacity uint64, tune func(*Options)) (*cluster, *host, *tally, *channel.Publisher) {
	t.Helper()
	c := newClusterOf(t, bigOnB(capacity), tune, "a", "b")
	tl := subscribe(ctx, t, mapRing(t, c.hosts[1]), true)
	c.linksUp()
	p, err := mapRing(t, c.hosts[0]).NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return c, c.hosts[1], tl, p
}

// smallOn is an overwrite channel of capacity on host small and of 1 MiB
// on the others.
func smallOn(small string, capacity uint64) func(host string) channel.Config {
	return func(host string) channel.Config {
		cfg := channel.Config{Policy: channel.PolicyOverwrite, Capacity: 1 << 20, MaxMessage: 256}
		if host == small {
			cfg.Capacity = capacity
		}
		return cfg
	}
}

// bigOnB is an overwrite channel of capacity on a and of 1 MiB on b,
// which holds every burst of the tests: b's subscriber loses nothing in
// its own ring, only what the link lost.
func bigOnB(capacity uint64) func(host string) channel.Config {
	return func(host string) channel.Config {
		cfg := channel.Config{Policy: channel.PolicyOverwrite, Capacity: capacity, MaxMessage: 256}
		if host == "b" {
			cfg.Capacity = 1 << 20
		}
		return cfg
	}
}

// TestOverwriteLossBeyondMark: b's agent stops with records beyond its
// mark (a batch half published when it died: its hwm's Have past its
// Seq) while a's overwrite ring laps both; a counts its loss from b's
// mark, and b must not count the records it has as lost. Before the fix
// b's link (and its subscriber) counted those 10 twice: once received,
// once lost.
func TestOverwriteLossBeyondMark(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, b, tl, p := lossyPair(ctx, t, 16<<10, nil)
	const n, beyond, more = 500, 10, 3000
	hwmPath := b.m.state.path("hwm", "a", chanKey{NS: testNS, Ch: testCh})
	// markAt publishes up to message upto and waits for b's mark there:
	// then a batch ends at upto.
	markAt := func(from, upto int) hwmRec {
		for i := from; i < upto; i++ {
			if err := p.TryPublish(message(1, uint32(i))); err != nil {
				t.Fatal(err)
			}
		}
		accountedOnB(t, tl, uint64(upto))
		var rec hwmRec
		waitFor(t, 10*time.Second, func() error {
			mk, r, err := openHWM(hwmPath)
			if err != nil {
				return err
			}
			mk.close()
			if rec = r; r.Seq != uint64(upto) {
				return fmt.Errorf("b's mark is at %d, want %d", r.Seq, upto)
			}
			return nil
		})
		return rec
	}
	at := markAt(0, n)
	markAt(n, n+beyond)
	carried := b.stat("a").Losses // b's restarted mirror counts from 0
	c.stopHost(b)
	// b's mark as after a kill in the middle of the last batch: the
	// batch's records are in its ring, its end not stored.
	mk, rec, err := openHWM(hwmPath)
	if err != nil {
		t.Fatal(err)
	}
	rec.Seq, rec.Units, rec.Have, rec.Pend = at.Seq, at.Units, n+beyond, 0
	if err := mk.storeHWM(rec); err != nil {
		t.Fatal(err)
	}
	mk.close()
	for i := n + beyond; i < n+beyond+more; i++ {
		if err := p.TryPublish(message(1, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.restartHost(b)
	accountedOnB(t, tl, n+beyond+more)
	// Nothing more comes: b counted no more than a published.
	time.Sleep(200 * time.Millisecond)
	accountedOnB(t, tl, n+beyond+more)
	tl.mu.Lock()
	gaps, lost, got := tl.gaps, tl.lost, tl.got
	tl.mu.Unlock()
	if st := b.stat("a"); gaps == 0 || carried+st.Losses != gaps || lost != gaps {
		t.Fatalf("b received %d and lost %d, %d of them in gap frames; its link lost %d before the restart and %d after", got, lost, gaps, carried, st.Losses)
	}
}

// TestLinkStatsPeerRestart: b's agent restarts (at a new address, as a
// pod does); a's statistics of its link to b go on from where they were:
// messages and bytes since a's mirror started, one reconnect, no loss,
// and the lag and window of the new link.
func TestLinkStatsPeerRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Capacity: 64 << 10}, nil, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	tl := subscribe(ctx, t, mapRing(t, b), false)
	c.linksUp()
	ra := mapRing(t, a)
	const n = 300
	var bytes [2]uint64 // of each round
	for i := range 2 * n {
		bytes[i/n] += uint64(len(message(1, uint32(i))))
	}
	p, err := ra.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	round := func(from int) {
		for i := from; i < from+n; i++ {
			if err := p.Publish(ctx, message(1, uint32(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 30*time.Second, func() error {
			if got, err := tl.count(); err != nil || got != from+n {
				return fmt.Errorf("b has %d of %d messages (%v)", got, from+n, err)
			}
			return nil
		})
	}
	round(0)
	c.stopHost(b)
	// While b is away: no link, so no lag or window; the counts stay.
	waitFor(t, 10*time.Second, func() error {
		got := a.stat("b")
		if want := (LinkStats{Peer: "b", State: got.State, Bytes: bytes[0], Messages: n}); got.State == StateUp || got != want {
			return fmt.Errorf("a's link to b while b is away: %+v, want %+v and not up", got, want)
		}
		return nil
	})
	c.startRegistry(b)
	c.startMirror(b)
	c.applyAll()
	round(n)
	waitFor(t, 10*time.Second, func() error {
		want := LinkStats{Peer: "b", State: StateUp, Bytes: bytes[0] + bytes[1], Messages: 2 * n, Window: DefaultInbox, Reconnects: 1}
		if got := a.stat("b"); got != want {
			return fmt.Errorf("a's link to b: %+v, want %+v", got, want)
		}
		// b's own mirror started again: its counts start there.
		want = LinkStats{Peer: "a", State: StateUp, Bytes: bytes[1], Messages: n, Window: DefaultInbox}
		if got := b.stat("a"); got != want {
			return fmt.Errorf("b's link to a: %+v, want %+v", got, want)
		}
		return nil
	})
}

// TestOverwriteLapsOverImports: b's small ring laps b's exporter over the
// messages b's importer wrote (a's, which b must not send back): b
// reports none of them to a as lost, so a's link and a's subscriber
// count no loss. Before, a counted every message b's exporter skipped
// in a lap.
func TestOverwriteLapsOverImports(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClusterOf(t, smallOn("b", 4096), nil, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	tl := subscribe(ctx, t, mapRing(t, a), true)
	c.linksUp()
	rb := mapRing(t, b)
	const n = 3000
	if err := publish(ctx, mapRing(t, a), 1, n, 0); err != nil {
		t.Fatal(err)
	}
	accountedOnB(t, tl, n) // here a's own subscriber
	waitFor(t, 10*time.Second, func() error {
		for _, mi := range rb.Members() {
			if mi.Role == channel.RoleSubscriber && mi.Lost != 0 {
				return nil
			}
		}
		return fmt.Errorf("nothing on b was lapped: %+v", rb.Members())
	})
	// b's exporter passes the laps on within its batch delay.
	time.Sleep(200 * time.Millisecond)
	_, lost, err := tl.accounted()
	if st := a.stat("b"); err != nil || st.Losses != 0 || lost != 0 {
		t.Fatalf("a counts %d lost on its link from b and its subscriber %d (%v): a's own messages", st.Losses, lost, err)
	}
}
