package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/mirror/internal/wire"
	"github.com/shimmy-dev/shimmy/rdma"
)

// Inbox bounds a peer's inbox may have.
const (
	minInbox = 64 << 10
	maxInbox = 256 << 20
)

// retrySubEvery is how often a session asks again for flows that are not
// open (the channel did not exist yet, or the peer refused).
const retrySubEvery = time.Second

// session is one link to a peer, from Hello to its end.
type session struct {
	p      *peer
	conn   rdma.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc

	inbox, out []byte
	rin, rout  rdma.Region
	remote     rdma.RemoteKey

	// Sending side: batches placed in the peer's inbox.
	smu            sync.Mutex
	scond          *sync.Cond
	sent, consumed uint64
	sclosed        bool

	// Receiving side.
	recvd atomic.Uint64 // inbox bytes handled
	ackMu sync.Mutex    // orders Acks: Consumed never goes back

	fmu     sync.Mutex
	flows   map[uint32]*importer // by flow id: ours
	exports map[uint32]*exporter // by flow id: the peer's
	wg      sync.WaitGroup       // exporters
}

func mmapAnon(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
}

// session runs the link c until it fails or ctx ends.
func (p *peer) session(ctx context.Context, c rdma.Conn) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &session{p: p, conn: c, ctx: ctx, cancel: cancel, flows: map[uint32]*importer{}, exports: map[uint32]*exporter{}}
	s.scond = sync.NewCond(&s.smu)
	p.mu.Lock()
	p.stopSess = cancel
	p.mu.Unlock()
	defer func() {
		cancel(err)
		c.Close()
		s.smu.Lock()
		s.sclosed = true
		s.scond.Broadcast()
		s.smu.Unlock()
		s.wg.Wait()
		s.fmu.Lock()
		for id, ex := range s.exports {
			ex.close()
			delete(s.exports, id)
		}
		s.fmu.Unlock()
		p.sess.Store(nil)
		s.release()
	}()
	if err := s.hello(); err != nil {
		return err
	}
	p.sess.Store(s)
	p.up()
	p.log.WithField("remote", c.RemoteAddr()).Info("link up")
	var wg sync.WaitGroup
	for _, f := range []func() error{s.control, s.completions, s.ticker} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				cancel(err)
			}
		}()
	}
	go func() {
		select {
		case <-c.Done():
			cancel(c.Err())
		case <-ctx.Done():
		}
	}()
	<-ctx.Done()
	c.Close() // unblocks Recv, Wait and Post
	wg.Wait()
	return context.Cause(ctx)
}

// hello registers the regions and exchanges Hellos.
func (s *session) hello() error {
	var err error
	if s.inbox, err = mmapAnon(s.p.m.o.Inbox); err != nil {
		return fmt.Errorf("mirror: inbox: %w", err)
	}
	if s.rin, err = s.conn.Register(s.inbox); err != nil {
		return err
	}
	var h wire.Hello
	kb, _ := s.rin.Key().AppendBinary(nil)
	copy(h.InboxKey[:], kb)
	if err := s.conn.Send(s.ctx, h.Append(nil)); err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	msg, err := s.conn.Recv(hctx)
	if err != nil {
		return fmt.Errorf("mirror: waiting for hello: %w", err)
	}
	ph, err := wire.ParseHello(msg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if s.remote, err = rdma.ParseRemoteKey(ph.InboxKey[:]); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if s.remote.Len < minInbox || s.remote.Len > maxInbox {
		return fmt.Errorf("%w: peer inbox of %d bytes", ErrProtocol, s.remote.Len)
	}
	if s.out, err = mmapAnon(int(s.remote.Len)); err != nil {
		return fmt.Errorf("mirror: send buffer: %w", err)
	}
	if s.rout, err = s.conn.Register(s.out); err != nil {
		return err
	}
	return nil
}

func (s *session) release() {
	for _, r := range []rdma.Region{s.rin, s.rout} {
		if r != nil {
			r.Close()
		}
	}
	for _, b := range [][]byte{s.inbox, s.out} {
		if b != nil {
			unix.Munmap(b)
		}
	}
	s.fmu.Lock()
	for id, imp := range s.flows {
		imp.detach()
		delete(s.flows, id)
	}
	s.fmu.Unlock()
}

// send places batch b in the peer's inbox (waiting for room) and rings
// the doorbell.
func (s *session) send(b []byte) error {
	buf, err := s.reserve(len(b))
	if err != nil {
		return err
	}
	return s.commit(append(buf, b...))
}

// placement is where a batch of n bytes goes in the peer's inbox after
// sent bytes: at sent, or at the start if it would cross the end
// (skipping the rest). The receiver places it the same way.
func placement(sent, n, size uint64) (off, skip uint64) {
	off = sent % size
	if off+n > size {
		return 0, size - off
	}
	return off, 0
}

// reserve waits for room in the peer's inbox for a batch of up to max
// bytes and returns the part of the send region to build it in (length
// 0, capacity max): the batch is built in place, not copied there. It
// holds the send turn until commit or unreserve.
func (s *session) reserve(max int) ([]byte, error) {
	n, size := uint64(max), s.remote.Len
	if n > size/2 {
		return nil, fmt.Errorf("mirror: batch of %d bytes for an inbox of %d", n, size)
	}
	s.smu.Lock()
	for {
		if s.sclosed {
			s.smu.Unlock()
			return nil, context.Cause(s.ctx)
		}
		off, skip := placement(s.sent, n, size)
		if s.sent+skip+n-s.consumed <= size {
			return s.out[off : off : off+n], nil
		}
		s.scond.Wait()
	}
}

// unreserve gives the send turn back unused.
func (s *session) unreserve() { s.smu.Unlock() }

// commit sends the batch b built in what reserve returned (or, if it
// outgrew it, a copy of it) and rings the doorbell.
func (s *session) commit(b []byte) error {
	defer s.smu.Unlock()
	n, size := uint64(len(b)), s.remote.Len
	if n > size/2 {
		return fmt.Errorf("mirror: batch of %d bytes for an inbox of %d", n, size)
	}
	off, skip := placement(s.sent, n, size)
	if s.sent+skip+n-s.consumed > size {
		return fmt.Errorf("mirror: batch of %d bytes outgrew its reservation", n)
	}
	// Built elsewhere: placed at the start because a larger batch would
	// have crossed the end, or grown past the reservation.
	if n > 0 && &s.out[off] != &b[0] {
		copy(s.out[off:], b)
	}
	err := s.conn.Post(rdma.Write{Local: s.rout, LocalOff: off, Len: uint32(n), Remote: s.remote, RemoteOff: off, WithImm: true, Imm: uint32(n)})
	if err != nil {
		return err
	}
	s.sent += skip + n
	return nil
}

// onConsumed records the peer's Ack of its inbox.
func (s *session) onConsumed(c uint64) error {
	s.smu.Lock()
	defer s.smu.Unlock()
	if c < s.consumed || c > s.sent {
		return fmt.Errorf("%w: peer consumed %d bytes of its inbox, %d before, %d sent", ErrProtocol, c, s.consumed, s.sent)
	}
	s.consumed = c
	s.scond.Broadcast()
	return nil
}

func (s *session) lagWindow() (lag, window uint64) {
	s.smu.Lock()
	window = s.remote.Len - (s.sent - s.consumed)
	s.smu.Unlock()
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, e := range s.exports {
		lag += e.lag()
	}
	return lag, window
}

// control handles the peer's control messages.
func (s *session) control() error {
	for {
		msg, err := s.conn.Recv(s.ctx)
		if err != nil {
			return err
		}
		h, err := wire.ParseHeader(msg)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		switch h.Type {
		case wire.TypeSub:
			sub, err := wire.ParseSub(msg)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if err := s.onSub(sub); err != nil {
				return err
			}
		case wire.TypeOpen:
			o, err := wire.ParseOpen(msg)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			imp := s.flow(o.Flow)
			if imp == nil {
				return fmt.Errorf("%w: open for flow %d that was never asked for", ErrProtocol, o.Flow)
			}
			if err := imp.onOpen(o); err != nil {
				return err
			}
			// The spool may have emptied since the Sub told its window,
			// while no Ack could tell the room (the flow was not open):
			// an origin that used that window waits for it.
			imp.ackRoom()
		case wire.TypeRefuse:
			r, err := wire.ParseRefuse(msg)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if imp := s.flow(r.Flow); imp != nil {
				imp.onRefuse(r)
			}
		case wire.TypeAck:
			a, err := wire.ParseAck(msg)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if err := s.onConsumed(a.Consumed); err != nil {
				return err
			}
			for _, e := range a.Entries {
				s.fmu.Lock()
				ex := s.exports[e.Flow]
				s.fmu.Unlock()
				if ex == nil {
					return fmt.Errorf("%w: ack for flow %d that is not open", ErrProtocol, e.Flow)
				}
				if err := ex.onAck(e); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: message type %d on the control channel", ErrProtocol, h.Type)
		}
	}
}

func (s *session) flow(id uint32) *importer {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.flows[id]
}

// completions handles the batches the peer wrote into the inbox.
func (s *session) completions() error {
	cs := make([]rdma.Completion, 64)
	size := uint64(len(s.inbox))
	var touched []*importer
	var ad ackDelay
	defer ad.reset()
	for {
		n, err := ad.wait(s.ctx, s.conn, cs)
		if err != nil {
			return err
		}
		if n == 0 { // the acknowledgement was due
			if err := s.ack(touched); err != nil {
				return err
			}
			touched = touched[:0]
			ad.reset()
			continue
		}
		recvd := s.recvd.Load()
		for _, c := range cs[:n] {
			if c.Op != rdma.OpImm {
				continue
			}
			l := uint64(c.Len)
			if l != uint64(c.Imm) || l < wire.DataFixedLen || l > size/2 {
				return fmt.Errorf("%w: batch of %d bytes (immediate %d) for an inbox of %d", ErrProtocol, l, c.Imm, size)
			}
			off := recvd % size
			if off+l > size {
				recvd += size - off
				off = 0
			}
			bt, err := wire.ParseBatch(s.inbox[off : off+l])
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			imp := s.flow(bt.Flow)
			if imp == nil {
				return fmt.Errorf("%w: batch for flow %d that was never asked for", ErrProtocol, bt.Flow)
			}
			if err := imp.deliver(s.ctx, bt); err != nil {
				return err
			}
			recvd += l
			s.recvd.Store(recvd)
			if !containsImp(touched, imp) {
				touched = append(touched, imp)
			}
			// A batch of no records carries the peer's position past
			// our own imports: its slot in its ring waits for the Ack.
			ad.add(l, imp.isStream() || bt.Count == 0)
		}
		if ad.due(size) {
			if err := s.ack(touched); err != nil {
				return err
			}
			touched = touched[:0]
			ad.reset()
		}
	}
}

// How long and how much a receiver may leave pubsub batches
// unacknowledged: an Ack costs both agents a system call and a wake-up,
// which one per batch of 100 KB messages made a tenth of their work.
// Stream batches are acknowledged at once (the Ack carries credit), and
// so are batches of no records (the peer's block slot waits for them).
const (
	ackAfter = 2 * time.Millisecond
	ackShare = 8 // of the inbox
)

// ackDelay tracks the batches handled and not yet acknowledged.
type ackDelay struct {
	bytes uint64
	first time.Time // when the oldest of them arrived
	now   bool      // acknowledge at once
	// until ends when their Ack is due: one context (and timer) for all
	// the waits until then, not one a wait (a batch each at low rates).
	until  context.Context
	cancel context.CancelFunc
}

// reset forgets the batches once they were acknowledged.
func (a *ackDelay) reset() {
	if a.cancel != nil {
		a.cancel()
	}
	*a = ackDelay{}
}

func (a *ackDelay) add(n uint64, now bool) {
	if a.bytes == 0 {
		a.first = time.Now()
	}
	a.bytes += n
	a.now = a.now || now
}

// due reports whether the batches handled must be acknowledged now.
func (a *ackDelay) due(inbox uint64) bool {
	return a.bytes > 0 && (a.now || a.bytes >= inbox/ackShare || time.Since(a.first) >= ackAfter)
}

// wait waits for completions; with batches unacknowledged, only until
// their Ack is due, and then returns 0.
func (a *ackDelay) wait(ctx context.Context, c rdma.Conn, cs []rdma.Completion) (int, error) {
	if a.bytes == 0 {
		return c.Wait(ctx, cs)
	}
	if n := c.Poll(cs); n > 0 {
		return n, nil
	}
	if a.until == nil {
		a.until, a.cancel = context.WithDeadline(ctx, a.first.Add(ackAfter))
	}
	n, err := c.Wait(a.until, cs)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return 0, nil
	}
	return n, err
}

func containsImp(l []*importer, imp *importer) bool {
	for _, x := range l {
		if x == imp {
			return true
		}
	}
	return false
}

// ack sends the inbox bytes consumed and the progress of imps.
func (s *session) ack(imps []*importer) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	a := wire.Ack{Consumed: s.recvd.Load()}
	for _, imp := range imps {
		if e, ok := imp.tell(); ok {
			a.Entries = append(a.Entries, e)
		}
	}
	return s.conn.Send(s.ctx, a.Append(nil))
}

// ticker renews stream credit every StatusEvery and asks again for
// flows that are not open.
func (s *session) ticker() error {
	t := time.NewTicker(s.p.m.o.StatusEvery)
	defer t.Stop()
	var lastSub time.Time
	for {
		if time.Since(lastSub) >= retrySubEvery {
			lastSub = time.Now()
			if err := s.subscribeAll(); err != nil {
				return err
			}
		}
		select {
		case <-s.ctx.Done():
			return nil
		case <-t.C:
		}
		var streams []*importer
		s.fmu.Lock()
		for _, imp := range s.flows {
			if imp.isStream() {
				streams = append(streams, imp)
			}
		}
		s.fmu.Unlock()
		if err := s.ack(streams); err != nil {
			return err
		}
	}
}

// subscribeAll sends a Sub for every shared channel (and stream queue)
// that has no open flow.
func (s *session) subscribeAll() error {
	s.p.closeUnshared()
	for _, sh := range s.p.getShares() {
		for q := 0; q < 2; q++ {
			k := chanKey{NS: sh[0], Ch: sh[1], Q: q}
			imp, err := s.p.importer(k)
			if errors.Is(err, errNoQueue) {
				break
			}
			if err != nil {
				s.p.log.WithError(err).WithField("channel", k.String()).Debug("cannot import yet")
				continue
			}
			sub, ok := imp.attach(s)
			if !ok {
				continue
			}
			if h := s.p.m.testHookSub.Load(); h != nil {
				(*h)(sub)
			}
			s.fmu.Lock()
			s.flows[sub.Flow] = imp
			s.fmu.Unlock()
			if err := s.conn.Send(s.ctx, sub.Append(nil)); err != nil {
				return err
			}
		}
	}
	return nil
}
