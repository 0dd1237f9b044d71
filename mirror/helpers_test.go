package mirror

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/tcp"
	"github.com/shimmy-dev/shimmy/registry"
)

const testNS, testCh = "ns", "ch"

// host is one agent of a test cluster: a registry on its own state
// directory and a mirror linked to the others over rdma/tcp on loopback.
type host struct {
	name  string
	dir   string
	reg   *registry.Registry
	tr    rdma.Transport
	m     *Mirror
	addr  string
	stop  context.CancelFunc
	done  chan error
	hopts func(*Options)
}

type cluster struct {
	t     testing.TB
	ca    *certs.Pair
	hosts []*host
	plan  func(self string) Plan
}

// newCluster starts one host per name, each sharing ns/ch of cfg with
// all the others.
func newCluster(t testing.TB, cfg channel.Config, tune func(*Options), names ...string) *cluster {
	t.Helper()
	return newClusterOf(t, func(string) channel.Config { return cfg }, tune, names...)
}

// newClusterOf is newCluster with ns/ch of cfg(name) on each host: the
// rings of a share may differ in size.
func newClusterOf(t testing.TB, cfg func(host string) channel.Config, tune func(*Options), names ...string) *cluster {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "test-ca"})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ca: ca}
	for _, n := range names {
		h := &host{name: n, dir: testenv.ShmDir(t, "mirror-"+n+"-"), hopts: tune}
		c.hosts = append(c.hosts, h)
		c.startRegistry(h)
		c.createShared(h, cfg(n))
	}
	for _, h := range c.hosts {
		c.startMirror(h)
	}
	c.applyAll()
	t.Cleanup(func() {
		for _, h := range c.hosts {
			c.stopHost(h)
		}
	})
	return c
}

// createShared creates the shared channel ns/ch of cfg on h.
func (c *cluster) createShared(h *host, cfg channel.Config) {
	ns, err := h.reg.CreateNamespace(testNS, registry.Attr{Mode: 0o755})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := ns.CreateChannel(testCh, registry.CreateOptions{Config: &cfg}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) startRegistry(h *host) {
	r, err := registry.New(registry.Options{StateDir: h.dir, Log: testenv.QuietLog()})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := r.Recover(); err != nil {
		c.t.Fatal(err)
	}
	h.reg = r
}

func (c *cluster) startMirror(h *host) {
	node, err := c.ca.Issue(certs.Options{Name: h.name})
	if err != nil {
		c.t.Fatal(err)
	}
	tr, err := tcp.New(rdma.Options{Certificate: node.TLS(), CA: c.ca.Pool(), Timeout: 3 * time.Second, Log: testenv.QuietLog()})
	if err != nil {
		c.t.Fatal(err)
	}
	// A restart takes a new port (applyAll tells the others): the old
	// one may be another test's by then.
	o := Options{Registry: h.reg, Transport: tr, Self: h.name, Listen: "127.0.0.1:0", Log: testenv.QuietLog(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, StatusEvery: 50 * time.Millisecond}
	if h.hopts != nil {
		h.hopts(&o)
	}
	m, err := New(o)
	if err != nil {
		c.t.Fatal(err)
	}
	h.tr, h.m, h.addr = tr, m, m.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan error, 1)
	go func() { h.done <- m.Run(ctx) }()
}

// applyAll gives every host the plan that shares ns/ch with all others.
func (c *cluster) applyAll() { c.share(testCh) }

// stopHost stops h's mirror and closes its registry (its rings stay in
// its state directory, as after an agent's exit).
func (c *cluster) stopHost(h *host) {
	if h.m == nil {
		return
	}
	h.stop()
	if err := <-h.done; err != nil {
		c.t.Errorf("%s: Run: %v", h.name, err)
	}
	h.tr.Close()
	h.reg.Close()
	h.m = nil
}

// restartHost is an agent restart: a new registry recovered from the
// state directory and a new mirror.
func (c *cluster) restartHost(h *host) {
	c.stopHost(h)
	c.startRegistry(h)
	c.startMirror(h)
	c.applyAll()
}

// ringPath is the ring file of ns/ch on h: clients map it themselves.
func (h *host) ringPath() string { return filepath.Join(h.dir, testNS, testCh, "ring") }

// mapRing maps h's ring as a client would, unmapped at cleanup.
func mapRing(t testing.TB, h *host) *channel.Ring {
	t.Helper()
	r, err := channel.MapFile(h.ringPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// message returns publisher pub's message seq: its identity, then bytes
// derived from it, then a checksum of all before.
func message(pub, seq uint32) []byte {
	n := 12 + int((seq*7919+pub*31)%200)
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b, pub)
	binary.LittleEndian.PutUint32(b[4:], seq)
	for i := 8; i < n-4; i++ {
		b[i] = byte(uint32(i)*pub + seq)
	}
	binary.LittleEndian.PutUint32(b[n-4:], crc32.ChecksumIEEE(b[:n-4]))
	return b
}

// parse checks a message's checksum and returns its publisher and seq.
func parse(b []byte) (pub, seq uint32, err error) {
	if len(b) < 12 || crc32.ChecksumIEEE(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return 0, 0, fmt.Errorf("message of %d bytes fails its checksum", len(b))
	}
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), nil
}

// publish publishes count messages of publisher pub into r.
func publish(ctx context.Context, r *channel.Ring, pub uint32, count int, q int) error {
	p, err := r.NewPublisher(channel.PublisherOptions{Queue: q})
	if err != nil {
		return err
	}
	defer p.Close()
	for i := 0; i < count; i++ {
		if err := p.Publish(ctx, message(pub, uint32(i))); err != nil {
			return fmt.Errorf("publish %d/%d: %w", pub, i, err)
		}
	}
	return nil
}

// tally is what a subscriber got: per publisher, the next seq it expects
// (messages arrive in order, once each), and its losses.
type tally struct {
	mu   sync.Mutex
	next map[uint32]uint32
	got  int
	lost uint64 // the subscriber's losses: overwrite, and the link's (gap frames)
	gaps uint64 // of lost, what gap frames reported
	err  error
}

func (tl *tally) add(b []byte, gapsAllowed bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	pub, seq, err := parse(b)
	if err == nil && seq != tl.next[pub] && !(gapsAllowed && seq > tl.next[pub]) {
		err = fmt.Errorf("publisher %d: message %d, want %d", pub, seq, tl.next[pub])
	}
	if err != nil {
		if tl.err == nil {
			tl.err = err
		}
		return
	}
	if tl.next == nil {
		tl.next = map[uint32]uint32{}
	}
	tl.next[pub] = seq + 1
	tl.got++
}

func (tl *tally) count() (int, error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.got, tl.err
}

// accounted is what the subscriber got plus what it lost, and the loss.
func (tl *tally) accounted() (uint64, uint64, error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return uint64(tl.got) + tl.lost, tl.lost, tl.err
}

// subscribe reads r from its oldest message until ctx ends, into a tally.
func subscribe(ctx context.Context, t *testing.T, r *channel.Ring, gaps bool) *tally {
	t.Helper()
	s, err := r.NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
	if err != nil {
		t.Fatal(err)
	}
	tl := &tally{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var buf []byte
		for {
			b, err := s.Next(ctx, buf)
			if err != nil {
				if ctx.Err() == nil {
					tl.mu.Lock()
					tl.err = err
					tl.mu.Unlock()
				}
				return
			}
			buf = b
			tl.add(b, gaps)
			tl.mu.Lock()
			tl.lost, tl.gaps = s.Lost(), s.Gaps()
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { wg.Wait(); s.Close() })
	return tl
}

// waitFor polls f until it returns nil, failing the test after timeout
// with f's last error.
func waitFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// linksUp waits until every host has its links up and, on each, the
// flows of the shared channel open both ways: from then on nothing
// published is missed.
func (c *cluster) linksUp() {
	waitFor(c.t, 20*time.Second, func() error {
		for _, h := range c.hosts {
			peers := h.peers()
			if len(peers) != len(c.hosts)-1 {
				return fmt.Errorf("%s has %d peers", h.name, len(peers))
			}
			for _, p := range peers {
				s := p.sess.Load()
				if s == nil {
					return fmt.Errorf("%s: link to %s is %s", h.name, p.cfg.Name, p.state.Load())
				}
				s.fmu.Lock()
				nex, open := len(s.exports), 0
				for _, imp := range s.flows {
					if e, ok := imp.ackEntry(); ok && e.Flow != 0 {
						open++
					}
				}
				s.fmu.Unlock()
				if nex == 0 || open == 0 {
					return fmt.Errorf("%s: link to %s: %d flows out, %d in", h.name, p.cfg.Name, nex, open)
				}

			}
		}
		return nil
	})
}

// peers returns h's mirror's peers.
func (h *host) peers() []*peer {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	peers := make([]*peer, 0, len(h.m.peers))
	for _, p := range h.m.peers {
		peers = append(peers, p)
	}
	return peers
}

// cut closes h's link to peer, as a network failure would.
func (h *host) cut(t *testing.T, peer string) {
	t.Helper()
	h.m.mu.Lock()
	p := h.m.peers[peer]
	h.m.mu.Unlock()
	if s := p.sess.Load(); s != nil {
		s.conn.Close()
	}
}

// stat returns h's stats of its link to peer.
func (h *host) stat(peer string) LinkStats {
	for _, st := range h.m.Stats() {
		if st.Peer == peer {
			return st
		}
	}
	return LinkStats{}
}
