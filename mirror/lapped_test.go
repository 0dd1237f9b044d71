package mirror

import (
	"context"
	"fmt"
	"testing"
)

// TestOverwriteLappedImportsAcrossRestart: c's messages reach a's small
// overwrite ring as imports while a does not share the channel with b;
// a's agent restarts, and a's own publisher laps its ring past them all
// before a shares the channel with b again. b's subscriber gets c's
// messages from c and counts as lost only a's messages that a's ring no
// longer held: what it received plus what it lost is exactly what a and
// c published. Before the fix a's exporter, which had forgotten its
// importers' claims with the restart, counted c's messages as a's own
// losses too.
func TestOverwriteLappedImportsAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClusterOf(t, smallOn("a", 16<<10), nil, "a", "b", "c")
	a, b, hc := c.hosts[0], c.hosts[1], c.hosts[2]
	tl := subscribe(ctx, t, mapRing(t, b), true)
	c.linksUp()
	ta := subscribe(ctx, t, mapRing(t, a), true) // a's ring has c's messages
	// a stops sharing with b; b and c still share with everyone.
	c.shareAmong(a, hc)
	waitFor(t, stallTimeout, func() error {
		a.m.mu.Lock()
		pb := a.m.peers["b"]
		a.m.mu.Unlock()
		if s := pb.sess.Load(); s != nil {
			s.fmu.Lock()
			defer s.fmu.Unlock()
			if n := len(s.exports); n > 0 {
				return fmt.Errorf("a still exports %d flows to b", n)
			}
		}
		return nil
	})
	const nc, na = 100, 3000
	if err := publish(ctx, mapRing(t, hc), 3, nc, 0); err != nil {
		t.Fatal(err)
	}
	accountedOnB(t, tl, nc)
	accountedOnB(t, ta, nc)
	c.stopHost(a)
	c.startRegistry(a)
	c.startMirror(a)
	for _, h := range []*host{b, hc} { // a's new address
		c.shareAmong(h, c.hosts...)
	}
	c.shareAmong(a, hc)
	// Many laps of a's ring, c's messages long overwritten.
	if err := publish(ctx, mapRing(t, a), 1, na, 0); err != nil {
		t.Fatal(err)
	}
	c.shareAmong(a, c.hosts...)
	accountedOnB(t, tl, nc+na)
	if _, lost, _ := tl.accounted(); lost == 0 {
		t.Fatal("b lost none of a's messages: the test did not lap a's ring")
	}
}

// shareAmong gives h a plan that names every other host as a peer and
// shares the test channel with those of with that are not h.
func (c *cluster) shareAmong(h *host, with ...*host) {
	c.t.Helper()
	var p Plan
	var names []string
	for _, o := range c.hosts {
		if o != h {
			p.Peers = append(p.Peers, Peer{Name: o.name, Addr: o.addr})
		}
	}
	for _, o := range with {
		if o != h {
			names = append(names, o.name)
		}
	}
	p.Shares = []Share{{Namespace: testNS, Channel: testCh, Peers: names}}
	if err := h.m.Apply(p); err != nil {
		c.t.Fatal(err)
	}
}
