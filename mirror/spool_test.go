package mirror

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/registry"
)

// burstSpoolRings is the spools' size in TestBlockBurstsOnTwoHosts, in
// rings: twice the bursts.
const burstSpoolRings = 8

// stallTimeout bounds how long the tests below wait for a flow that the
// mirror could stall: a stall fails them with what was missing, not the
// suite's timeout.
const stallTimeout = 30 * time.Second

// TestBlockBurstsOnTwoHosts: publishers on A and B publish, at once,
// bursts of several times what either small block ring holds; every
// message reaches the subscribers on both hosts once, intact, in its
// publisher's order. Each host's importer needs room in its ring, which
// that ring keeps for the other host until it acknowledges: without the
// spool the two hosts wait for each other, and with bursts past what the
// spools hold, both spools fill unless the importers get the room their
// peers' acknowledgements free.
func TestBlockBurstsOnTwoHosts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		capacity   uint64
		publishers int // per host
		n          int // messages per publisher
		spoolRings int
	}{
		// About 4 rings' worth per host (messages of 12 to 211 bytes),
		// at most what each spool holds.
		{"one publisher per host", 64 << 10, 1, 2000, burstSpoolRings},
		{"two publishers per host", 64 << 10, 2, 1000, burstSpoolRings},
		{"small ring", 16 << 10, 1, 500, burstSpoolRings},
		// About 40 rings' worth per host into spools of one ring: both
		// spools fill.
		{"past both spools", 16 << 10, 2, 2500, 1},
		{"past both spools, one publisher", 64 << 10, 1, 20000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(t, channel.Config{Policy: channel.PolicyBlock, Capacity: tc.capacity, MaxMessage: 1024},
				func(o *Options) { o.SpoolRings = tc.spoolRings }, "a", "b")
			tallies := map[string]*tally{}
			for _, h := range c.hosts {
				tallies[h.name] = subscribe(ctx, t, mapRing(t, h), false)
			}
			c.linksUp()
			pctx, pcancel := context.WithTimeout(ctx, stallTimeout)
			defer pcancel()
			errs := make(chan error, len(c.hosts)*tc.publishers)
			for i, h := range c.hosts {
				r := mapRing(t, h)
				for j := range tc.publishers {
					go func() { errs <- publish(pctx, r, uint32(i*tc.publishers+j+1), tc.n, 0) }()
				}
			}
			var failed error
			for range len(c.hosts) * tc.publishers {
				if err := <-errs; err != nil && failed == nil {
					failed = err
					t.Logf("publishers stalled (the hosts wait for each other): %v\n%s", err, c.dump(testCh))
				}
			}
			if failed != nil {
				t.FailNow()
			}
			expectWithin(t, stallTimeout, len(c.hosts)*tc.publishers*tc.n, tallies)
			// The spools drained: the importers gave the rings back.
			for _, h := range c.hosts {
				r := mapRing(t, h)
				waitFor(t, stallTimeout, func() error {
					if slot, ok := r.Reserved(0); ok {
						return fmt.Errorf("%s's ring is still reserved by slot %d", h.name, slot)
					}
					return nil
				})
			}
		})
	}
}

// TestSlowChannelKeepsLinkFlowing: b's only subscriber of block channel x
// stops reading; a keeps publishing into x until b's ring, b's spool and
// a's ring are full and a's publisher waits. Channel y, on the same link,
// keeps flowing meanwhile. Once x's subscriber reads again, every message
// of x arrives, once and in order.
func TestSlowChannelKeepsLinkFlowing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const x = "x"
	cfg := channel.Config{Policy: channel.PolicyBlock, Capacity: 64 << 10, MaxMessage: 1024}
	c := newCluster(t, cfg, nil, "a", "b")
	for _, h := range c.hosts {
		createChannel(t, h, x, cfg)
	}
	c.share(testCh, x)
	a, b := c.hosts[0], c.hosts[1]
	ya, yb := mapRing(t, a), mapRing(t, b)
	xa, xb := mapChannel(t, a, x), mapChannel(t, b, x)
	yTally := subscribe(ctx, t, yb, false)
	next, closeX := member(t, xb, channel.TypePubSub)
	t.Cleanup(closeX)
	c.flowsUp(2)

	// Far more than b's ring, b's spool and a's ring hold: a's publisher
	// of x ends up waiting for b's subscriber.
	const nx = 3000
	xdone := make(chan error, 1)
	go func() { xdone <- publish(ctx, xa, 1, nx, 0) }()
	waitFor(t, stallTimeout, func() error {
		if qs := xa.QueueStats(0); qs.SpaceWaiters == 0 {
			return fmt.Errorf("a's publisher of x is not held back yet: %+v", qs)
		}
		return nil
	})

	const ny = 3000
	if err := publishWithin(ctx, ya, 2, ny); err != nil {
		t.Fatalf("y on a: %v", err)
	}
	expectWithin(t, stallTimeout, ny, map[string]*tally{"b (y, behind a stopped subscriber of x)": yTally})
	select {
	case err := <-xdone:
		t.Fatalf("a's publisher of x finished (%v) while b's subscriber read nothing: block did not hold it", err)
	default:
	}

	xt := &tally{}
	waitFor(t, stallTimeout, func() error {
		for {
			got, err := xt.count()
			if err != nil {
				t.Fatal(err)
			}
			if got == nx {
				return nil
			}
			m, err := next(10 * time.Millisecond)
			if err != nil {
				return fmt.Errorf("b's subscriber of x has %d of %d messages: %w", got, nx, err)
			}
			xt.add(m, false)
		}
	})
	if err := <-xdone; err != nil {
		t.Fatal(err)
	}
	if m, err := next(50 * time.Millisecond); err == nil {
		t.Fatalf("b's subscriber of x got a message beyond the %d published: % x", nx, m[:min(len(m), 16)])
	}
}

// publishWithin publishes count messages of pub into r, failing after
// stallTimeout.
func publishWithin(ctx context.Context, r *channel.Ring, pub uint32, count int) error {
	ctx, cancel := context.WithTimeout(ctx, stallTimeout)
	defer cancel()
	err := publish(ctx, r, pub, count, 0)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stalled: %w", err)
	}
	return err
}

// expectWithin waits until every tally counted want messages without
// error, failing after timeout with what each has.
func expectWithin(t *testing.T, timeout time.Duration, want int, tallies map[string]*tally) {
	t.Helper()
	waitFor(t, timeout, func() error {
		for name, tl := range tallies {
			got, err := tl.count()
			if err != nil {
				t.Fatalf("subscriber on %s: %v", name, err)
			}
			if got != want {
				return fmt.Errorf("subscriber on %s has %d of %d messages", name, got, want)
			}
		}
		return nil
	})
}

// createChannel makes channel name of testNS on h.
func createChannel(t *testing.T, h *host, name string, cfg channel.Config) {
	t.Helper()
	ns, err := h.reg.Namespace(testNS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.CreateChannel(name, registry.CreateOptions{Config: &cfg}); err != nil {
		t.Fatal(err)
	}
}

// mapChannel maps h's ring of testNS/name as a client would.
func mapChannel(t *testing.T, h *host, name string) *channel.Ring {
	t.Helper()
	r, err := channel.MapFile(filepath.Join(h.dir, testNS, name, "ring"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// share gives every host a plan that shares the channels of testNS
// named with all the others.
func (c *cluster) share(channels ...string) {
	for _, h := range c.hosts {
		var p Plan
		var names []string
		for _, o := range c.hosts {
			if o != h {
				p.Peers = append(p.Peers, Peer{Name: o.name, Addr: o.addr})
				names = append(names, o.name)
			}
		}
		for _, ch := range channels {
			p.Shares = append(p.Shares, Share{Namespace: testNS, Channel: ch, Peers: names})
		}
		if err := h.m.Apply(p); err != nil {
			c.t.Fatal(err)
		}
	}
}

// flowsUp waits until every host has n flows open each way on each of
// its links.
func (c *cluster) flowsUp(n int) {
	c.linksUp()
	waitFor(c.t, 20*time.Second, func() error {
		for _, h := range c.hosts {
			for _, p := range h.peers() {
				s := p.sess.Load()
				if s == nil {
					return fmt.Errorf("%s: link to %s is down", h.name, p.cfg.Name)
				}
				s.fmu.Lock()
				nex, open := len(s.exports), 0
				for _, imp := range s.flows {
					if _, ok := imp.ackEntry(); ok {
						open++
					}
				}
				s.fmu.Unlock()
				if nex < n || open < n {
					return fmt.Errorf("%s: link to %s: %d flows out, %d in, want %d", h.name, p.cfg.Name, nex, open, n)
				}
			}
		}
		return nil
	})
}

// dump describes the flows of channel ch on every host: rings, spools,
// windows; for the message of a test that found a flow stalled.
func (c *cluster) dump(ch string) string {
	var b strings.Builder
	for _, h := range c.hosts {
		r, err := channel.MapFile(filepath.Join(h.dir, testNS, ch, "ring"))
		if err == nil {
			qs := r.QueueStats(0)
			fmt.Fprintf(&b, "%s ring: tail %v limit %d in use %d, %d space waiters\n", h.name, qs.Tail, qs.Limit, qs.InUse, qs.SpaceWaiters)
			if slot, ok := r.Reserved(0); ok {
				fmt.Fprintf(&b, "  reserved by slot %d\n", slot)
			}
			for _, mi := range r.Members() {
				fmt.Fprintf(&b, "  member %d role %d cursor %v lag %d\n", mi.Slot, mi.Role, channel.Position(mi.Cursor), mi.Lag)
			}
			r.Close()
		}
		h.m.mu.Lock()
		for _, p := range h.m.peers {
			for k, imp := range p.importers {
				imp.mu.Lock()
				fmt.Fprintf(&b, "  import %s from %s: hwm %+v, window %d told %d\n", k, p.cfg.Name, imp.hwm, imp.windowLocked(), imp.told)
				imp.mu.Unlock()
			}
			if s := p.sess.Load(); s != nil {
				s.fmu.Lock()
				for _, ex := range s.exports {
					ex.mu.Lock()
					fmt.Fprintf(&b, "  export %s to %s: sent %v acked %v, record bytes %d window %d\n", ex.key, p.cfg.Name, ex.sentNext, ex.acked, ex.sentRec, ex.window)
					ex.mu.Unlock()
				}
				s.fmu.Unlock()
			}
		}
		h.m.mu.Unlock()
	}
	return b.String()
}

// TestRoomToldOnceFlowOpens: b's spool is full when its link to a comes
// back, so its Sub tells a window of nothing, and the spool empties into
// b's ring before a's Open arrives, while no Ack can tell the room (the
// flow is not open). b tells it once the flow opens: a's exporter, held
// to the Sub's window, sends the rest, and every message arrives once,
// in order. (TestAgentRestart/block/origin stalled so, rarely: b's spool
// emptied as a's restarted agent answered the Sub.)
func TestRoomToldOnceFlowOpens(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, channel.Config{Policy: channel.PolicyBlock, Capacity: 64 << 10, MaxMessage: 1024}, nil, "a", "b")
	a, b := c.hosts[0], c.hosts[1]
	ra, rb := mapRing(t, a), mapRing(t, b)
	next, closeSub := member(t, rb, channel.TypePubSub)
	t.Cleanup(closeSub)
	c.flowsUp(1)

	// Far more than b's ring and spool hold: with b's subscriber stopped,
	// b's spool fills and a's exporter has no window left.
	const n = 3000
	var pubErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pubErr = publish(ctx, ra, 1, n, 0) }()
	t.Cleanup(func() { cancel(); wg.Wait() }) // before ra is unmapped

	imp := b.importerFrom("a") // it outlives the link
	waitFor(t, stallTimeout, func() error {
		if sp, room := imp.spooled(); sp < room {
			return fmt.Errorf("b's spool is not full yet: %d of %d bytes", sp, room)
		}
		return nil
	})

	tl := &tally{}
	read := func() error {
		for {
			m, err := next(10 * time.Millisecond)
			if err != nil {
				return err
			}
			tl.add(m, false)
		}
	}
	hookErr := make(chan error, 1)
	var once sync.Once
	hook := func(sub wire.Sub) {
		once.Do(func() {
			var err error
			if sub.Window != 0 {
				err = fmt.Errorf("the Sub tells a window of %d: the spool was not full", sub.Window)
			}
			// b's subscriber reads until b's spool is empty, before the
			// Sub goes out (and so before a's Open).
			deadline := time.Now().Add(stallTimeout)
			for sp, _ := imp.spooled(); err == nil && sp > 0; sp, _ = imp.spooled() {
				if time.Now().After(deadline) {
					err = fmt.Errorf("b's spool still holds %d bytes", sp)
				}
				read()
			}
			hookErr <- err
		})
	}
	b.m.testHookSub.Store(&hook)
	b.cut(t, "a")
	select {
	case err := <-hookErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(stallTimeout):
		t.Fatal("b sent no Sub after its link to a was cut")
	}
	waitFor(t, stallTimeout, func() error {
		read()
		if got, err := tl.count(); err != nil || got != n {
			return fmt.Errorf("b's subscriber has %d of %d messages (%v): a's exporter waits for room b does not tell", got, n, err)
		}
		return nil
	})
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
}

// spooled is what imp's spool holds, and the room its window gives.
func (imp *importer) spooled() (uint64, uint64) {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	return imp.hwm.spooled(), imp.room
}

// importerFrom is h's importer of ns/ch from peer; nil without a link.
func (h *host) importerFrom(peer string) *importer {
	h.m.mu.Lock()
	p := h.m.peers[peer]
	h.m.mu.Unlock()
	s := p.sess.Load()
	if s == nil {
		return nil
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, imp := range s.flows {
		if imp.key == (chanKey{NS: testNS, Ch: testCh}) {
			return imp
		}
	}
	return nil
}
