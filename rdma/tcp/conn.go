package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/internal/cq"
)

// Sizes of the write path.
const (
	smallWrite = 4 << 10  // write data up to this size is copied into the batch
	batchLen   = 64 << 10 // the batch is encrypted when it reaches this size
	readBuf    = 256 << 10
	ctrlQueue  = 64 // control messages waiting for Recv before the link stalls
)

// conn is a link over one TLS connection. One goroutine reads frames; the
// writers (Post, Send, heartbeats) take turns through wsem.
type conn struct {
	o    rdma.Options
	tls  *tls.Conn
	raw  *gatherConn
	peer string
	log  logrus.FieldLogger

	wsem     chan struct{} // write turn
	batch    []byte        // plaintext being gathered, under wsem
	lastSend atomic.Int64  // ns since epoch
	heard    atomic.Uint64 // reads that returned bytes: the heartbeat watches it move
	stalled  atomic.Bool   // the reader waits for the local user to poll
	epoch    time.Time

	regions regionTable
	cq      *cq.Queue
	ctrl    chan []byte

	once sync.Once
	done chan struct{}
	err  error
}

var _ rdma.Conn = (*conn)(nil)

func newConn(o rdma.Options, tc *tls.Conn, raw *gatherConn, peer string) *conn {
	c := &conn{
		o: o, tls: tc, raw: raw, peer: peer,
		log:   o.Log.WithFields(logrus.Fields{"peer": peer, "remote": raw.RemoteAddr().String()}),
		wsem:  make(chan struct{}, 1),
		batch: make([]byte, 0, batchLen+HeaderLen+smallWrite),
		epoch: time.Now(),
		cq:    cq.New(o.CQDepth),
		ctrl:  make(chan []byte, ctrlQueue),
		done:  make(chan struct{}),
	}
	raw.startGather()
	go c.readLoop(&progress{r: tc, n: &c.heard})
	go c.heartbeat()
	return c
}

func (c *conn) Peer() string                  { return c.peer }
func (c *conn) RemoteAddr() net.Addr          { return c.raw.RemoteAddr() }
func (c *conn) Done() <-chan struct{}         { return c.done }
func (c *conn) Poll(cs []rdma.Completion) int { return c.cq.Poll(cs) }

func (c *conn) Wait(ctx context.Context, cs []rdma.Completion) (int, error) {
	return c.cq.Wait(ctx, cs)
}

func (c *conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *conn) now() int64 { return int64(time.Since(c.epoch)) }

// Register implements rdma.Conn.
func (c *conn) Register(mem []byte) (rdma.Region, error) {
	if len(mem) == 0 {
		return nil, fmt.Errorf("%w: empty region", rdma.ErrRegion)
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	r := &region{c: c, mem: mem}
	c.regions.add(r)
	return r, nil
}

// lockWrite takes the write turn; ctx may be nil (wait until close).
func (c *conn) lockWrite(ctx context.Context) error {
	var cancel <-chan struct{}
	if ctx != nil {
		cancel = ctx.Done()
	}
	select {
	case c.wsem <- struct{}{}:
		if err := c.Err(); err != nil {
			<-c.wsem
			return err
		}
		return nil
	case <-c.done:
		return c.err
	case <-cancel:
		return ctx.Err()
	}
}

func (c *conn) unlockWrite() { <-c.wsem }

// encrypt hands the gathered plaintext to TLS.
func (c *conn) encrypt() error {
	if len(c.batch) == 0 {
		return nil
	}
	_, err := c.tls.Write(c.batch)
	c.batch = c.batch[:0]
	return err
}

// flush sends everything written in this turn.
func (c *conn) flush() error {
	if err := c.encrypt(); err != nil {
		return err
	}
	if err := c.raw.Flush(); err != nil {
		return err
	}
	c.lastSend.Store(c.now())
	return nil
}

// Post implements rdma.Conn. Small writes are gathered with their headers
// into one batch; a large one is encrypted straight from its region.
func (c *conn) Post(ws ...rdma.Write) error {
	for i := range ws {
		if err := c.checkLocal(&ws[i]); err != nil {
			return err
		}
	}
	if err := c.lockWrite(nil); err != nil {
		return err
	}
	defer c.unlockWrite()
	var signaled []rdma.Completion
	for i := range ws {
		w := &ws[i]
		h := Header{Type: TypeWrite, Length: w.Len, Key: w.Remote.Key, Offset: w.RemoteOff}
		if w.WithImm {
			h.Type, h.Imm = TypeWriteImm, w.Imm
		}
		c.batch = h.Append(c.batch)
		data := w.Local.Bytes()[w.LocalOff : w.LocalOff+uint64(w.Len)]
		if len(data) <= smallWrite {
			c.batch = append(c.batch, data...)
		} else if err := c.encrypt(); err != nil {
			return c.fail(err)
		} else if _, err := c.tls.Write(data); err != nil {
			return c.fail(err)
		}
		if len(c.batch) >= batchLen {
			if err := c.encrypt(); err != nil {
				return c.fail(err)
			}
		}
		if w.Signaled {
			signaled = append(signaled, rdma.Completion{Op: rdma.OpWrite, ID: w.ID, Len: w.Len})
		}
	}
	if err := c.flush(); err != nil {
		return c.fail(err)
	}
	if len(signaled) > 0 {
		c.cq.PushLocal(signaled...)
	}
	return nil
}

func (c *conn) checkLocal(w *rdma.Write) error {
	r, ok := w.Local.(*region)
	if !ok || r.c != c {
		return fmt.Errorf("%w: local region not registered on this link", rdma.ErrRegion)
	}
	if r.closed.Load() {
		return fmt.Errorf("%w: local region closed", rdma.ErrRegion)
	}
	return w.Check()
}

// Send implements rdma.Conn.
func (c *conn) Send(ctx context.Context, msg []byte) error {
	if len(msg) > rdma.MaxControl {
		return fmt.Errorf("%w: control message of %d bytes, at most %d", rdma.ErrTooLarge, len(msg), rdma.MaxControl)
	}
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	c.batch = Header{Type: TypeControl, Length: uint32(len(msg))}.Append(c.batch)
	c.batch = append(c.batch, msg...)
	if err := c.flush(); err != nil {
		return c.fail(err)
	}
	return nil
}

// Recv implements rdma.Conn: messages that arrived before a close are
// still returned.
func (c *conn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case m := <-c.ctrl:
		return m, nil
	default:
	}
	select {
	case m := <-c.ctrl:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.ctrl:
			return m, nil
		default:
			return nil, c.err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close implements rdma.Conn.
func (c *conn) Close() error {
	c.fail(nil)
	return nil
}

func (c *conn) readLoop(src io.Reader) {
	rx := newReceiver(src, &c.regions, c.pushImm, c.pushCtrl)
	defer rx.release()
	for {
		if err := rx.next(); err != nil {
			c.fail(err)
			return
		}
		rx.idle()
	}
}

// progress counts the reads of a link that returned bytes: one per TLS
// record at most, so that even one long write shows the peer alive.
type progress struct {
	r io.Reader
	n *atomic.Uint64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n.Add(1)
	}
	return n, err
}

func (c *conn) pushImm(comp rdma.Completion) bool {
	if c.cq.TryPush(comp) {
		return true
	}
	c.stalled.Store(true)
	ok := c.cq.Push(comp)
	c.stalled.Store(false)
	return ok
}

func (c *conn) pushCtrl(m []byte) bool {
	c.stalled.Store(true)
	defer c.stalled.Store(false)
	select {
	case c.ctrl <- m:
		return true
	case <-c.done:
		return false
	}
}

// heartbeat sends a ping when the link was quiet for an interval and
// closes it when the peer was silent for the timeout (unless the local
// user is the one holding the reader back).
func (c *conn) heartbeat() {
	t := time.NewTicker(c.o.Heartbeat / 2)
	defer t.Stop()
	var seen uint64     // reads counted at lastHeard
	var lastHeard int64 // when the count last moved (or the reader stalled)
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		now := c.now()
		if n := c.heard.Load(); n != seen || c.stalled.Load() {
			seen, lastHeard = n, now
		} else if silent := time.Duration(now - lastHeard); silent > c.o.Timeout {
			c.fail(fmt.Errorf("%w: nothing heard for %v", rdma.ErrTimeout, silent.Round(time.Millisecond)))
			return
		}
		if time.Duration(now-c.lastSend.Load()) < c.o.Heartbeat {
			continue
		}
		select {
		case c.wsem <- struct{}{}:
		default:
			continue // a writer is busy: the link is not idle
		}
		c.batch = Header{Type: TypePing}.Append(c.batch)
		err := c.flush()
		c.unlockWrite()
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// fail closes the link once, for cause (nil: a local Close), telling the
// peer why when it can do so without waiting, and returns the link's error.
func (c *conn) fail(cause error) error {
	c.once.Do(func() {
		code, reason := CodeNormal, "closed"
		var pc *peerClosed
		switch {
		case cause == nil:
		case errors.As(cause, &pc):
			code = 0xffff_ffff // the peer knows
		case errors.Is(cause, rdma.ErrRegion):
			code, reason = CodeRegion, cause.Error()
		case errors.Is(cause, errVersion):
			code, reason = CodeVersion, cause.Error()
		case errors.Is(cause, rdma.ErrProtocol):
			code, reason = CodeProtocol, cause.Error()
		default:
			code = 0xffff_ffff // the connection itself failed
		}
		if code != 0xffff_ffff {
			c.sayClose(code, reason)
		}
		c.err = rdma.Closed(cause)
		switch {
		case cause == nil, errors.Is(cause, rdma.ErrClosed) && !errors.Is(cause, rdma.ErrRegion) && !errors.Is(cause, rdma.ErrProtocol):
			c.log.WithError(cause).Debug("rdma: link closed")
		default:
			c.log.WithError(cause).Warn("rdma: link failed")
		}
		close(c.done)
		c.cq.Close(c.err)
		c.raw.Close()
	})
	return c.err
}

// sayClose sends a Close frame if the write turn is free soon.
func (c *conn) sayClose(code uint32, reason string) {
	select {
	case c.wsem <- struct{}{}:
	case <-time.After(50 * time.Millisecond):
		return
	}
	defer c.unlockWrite()
	c.raw.SetWriteDeadline(time.Now().Add(time.Second))
	c.batch = closeFrame(c.batch[:0], code, reason)
	c.flush()
}

// closeFrame appends a Close frame with code and reason (cut to MaxReason).
func closeFrame(b []byte, code uint32, reason string) []byte {
	if len(reason) > MaxReason {
		reason = reason[:MaxReason]
	}
	b = Header{Type: TypeClose, Length: uint32(len(reason)), Key: code}.Append(b)
	return append(b, reason...)
}

// Abort closes a link of this backend for cause, telling the peer why: a
// cause matching rdma.ErrRegion or rdma.ErrProtocol goes out as the close
// code. The verbs backend fails its control connection with it.
func Abort(c rdma.Conn, cause error) error {
	tc, ok := c.(*conn)
	if !ok {
		c.Close()
		return rdma.Closed(cause)
	}
	return tc.fail(cause)
}
