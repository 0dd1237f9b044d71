package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/registry"
)

// dialTimeout bounds one Dial.
const dialTimeout = 10 * time.Second

// Addr returns the address the mirror accepts links on (nil without
// Options.Listen).
func (m *Mirror) Addr() net.Addr {
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

func (m *Mirror) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.ln != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.accept(ctx)
		}()
		stop := context.AfterFunc(ctx, func() { m.ln.Close() })
		defer stop()
	}
	// A channel or namespace removed may leave state files to forget
	// (forgetUnshared), as a plan change and a flow's end may.
	defer m.o.Registry.Subscribe(0, func(e registry.Event) {
		switch e.Kind {
		case registry.Removed, registry.NamespaceRemoved, registry.Overflow:
			m.kick()
		}
	})()
	for {
		m.reconcile(ctx, &wg)
		m.releaseUnshared()
		m.forgetUnshared()
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for name, p := range m.peers {
				p.cancel()
				delete(m.peers, name)
			}
			m.mu.Unlock()
			return nil
		case <-m.wake:
		}
	}
}

// accept hands each accepted link to the peer whose identity it carries.
func (m *Mirror) accept(ctx context.Context) {
	for {
		c, err := m.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.WithError(err).Warn("accept")
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.o.MinBackoff):
			}
			continue
		}
		p := m.peerByID(c.Peer())
		if p == nil {
			m.log.WithFields(logrus.Fields{"peer": c.Peer(), "remote": c.RemoteAddr()}).Warn("link refused: identity not in the plan")
			c.Close()
			continue
		}
		select {
		case old := <-p.incoming: // superseded before it was taken
			old.Close()
		default:
		}
		p.incoming <- c
		p.interrupt()
	}
}

func (m *Mirror) peerByID(id string) *peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.peers {
		if p.cfg.ID() == id {
			return p
		}
	}
	return nil
}

// reconcile starts a peer for every peer of the plan, stops those it no
// longer names, and restarts the link of a peer whose shares changed.
func (m *Mirror) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]Peer{}
	for _, pe := range m.plan.Peers {
		want[pe.Name] = pe
	}
	for name, p := range m.peers {
		if pe, ok := want[name]; !ok || pe != p.cfg {
			p.cancel()
			delete(m.peers, name)
		}
	}
	for name, pe := range want {
		shares := m.plan.sharesWith(name)
		if p := m.peers[name]; p != nil {
			if p.setShares(shares) {
				p.interrupt()
			}
			continue
		}
		p := m.newPeer(pe, shares)
		m.restoreHolds(p)
		pctx, cancel := context.WithCancel(ctx)
		p.cancel = cancel
		m.peers[name] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(pctx)
		}()
	}
}

// peer is one other agent of the plan and the link to it.
type peer struct {
	m        *Mirror
	cfg      Peer
	dials    bool // of the two identities ours sorts first
	log      logrus.FieldLogger
	incoming chan rdma.Conn
	cancel   context.CancelFunc

	mu       sync.Mutex
	shares   [][2]string
	stopSess context.CancelCauseFunc // ends the current session (shares changed, a new link came)

	importers map[chanKey]*importer // the run goroutine's, kept across sessions

	state atomic.Value // LinkState
	*linkCounts
	sess atomic.Pointer[session]
}

func (m *Mirror) newPeer(pe Peer, shares [][2]string) *peer {
	p := &peer{
		m: m, cfg: pe, dials: m.o.Self < pe.ID(), shares: shares,
		log:        m.log.WithField("peer", pe.Name),
		incoming:   make(chan rdma.Conn, 1),
		importers:  map[chanKey]*importer{},
		linkCounts: m.countsFor(pe.Name),
	}
	p.state.Store(StateConnecting)
	return p
}

// setShares records the peer's shares; true if they changed.
func (p *peer) setShares(s [][2]string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Equal(p.shares, s) {
		return false
	}
	p.shares = s
	return true
}

// interrupt ends the current session, if any.
func (p *peer) interrupt() {
	p.mu.Lock()
	f := p.stopSess
	p.mu.Unlock()
	if f != nil {
		f(errInterrupted)
	}
}

func (p *peer) getShares() [][2]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shares
}

func (p *peer) run(ctx context.Context) {
	defer p.closeImporters()
	backoff := p.m.o.MinBackoff
	for ctx.Err() == nil {
		p.closeUnshared()
		p.state.Store(StateConnecting)
		c, err := p.connect(ctx)
		if err == nil {
			start := time.Now()
			err = p.session(ctx, c)
			c.Close()
			if time.Since(start) > p.m.o.MaxBackoff {
				backoff = p.m.o.MinBackoff
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.log.WithError(err).Warn("link down")
		p.state.Store(StateBackoff)
		if !p.dials {
			continue // the peer dials again; take its link at once
		}
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, p.m.o.MaxBackoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// connect dials the peer, or waits for it to dial.
func (p *peer) connect(ctx context.Context) (rdma.Conn, error) {
	select {
	case c := <-p.incoming:
		return c, nil
	default:
	}
	if p.dials && p.cfg.Addr != "" {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		c, err := p.m.o.Transport.Dial(dctx, p.cfg.Addr, rdma.DialOptions{Peer: p.cfg.ID()})
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", p.cfg.Addr, err)
		}
		return c, nil
	}
	select {
	case c := <-p.incoming:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// up records a link that came up (both Hellos exchanged).
func (p *peer) up() {
	if p.ups.Add(1) > 1 {
		p.reconnects.Add(1)
	}
	p.state.Store(StateUp)
}

func (p *peer) stats() LinkStats {
	st := LinkStats{
		Peer: p.cfg.Name, State: p.state.Load().(LinkState),
		Bytes: p.bytes.Load(), Messages: p.msgs.Load(),
		Reconnects: p.reconnects.Load(), Losses: p.losses.Load(),
	}
	if s := p.sess.Load(); s != nil {
		st.Lag, st.Window = s.lagWindow()
	}
	return st
}

func (p *peer) closeImporters() {
	for k, imp := range p.importers {
		imp.close()
		delete(p.importers, k)
	}
}
