// Package tcp is the default rdma backend: links over TCP with mutual TLS
// 1.3, available everywhere. Regions are memory the receiving side copies
// the peer's writes into, after checking each against the region's
// bounds; the wire format is docs/transport-wire.md.
package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/rdma"
)

// Transport makes TLS links. It holds no resources of its own.
type Transport struct {
	o              rdma.Options
	server, client *tls.Config
}

var _ rdma.Transport = (*Transport)(nil)

// New makes a transport. Options.CA is required; without a Certificate
// every handshake fails with ErrAuth (a peer demands one).
func New(o rdma.Options) (*Transport, error) {
	if o.CA == nil {
		return nil, fmt.Errorf("%w: no cluster CA", rdma.ErrAuth)
	}
	o = o.WithDefaults()
	t := &Transport{o: o}
	t.server, t.client = tlsConfigs(o)
	return t, nil
}

// Options returns the transport's options with defaults filled in.
func (t *Transport) Options() rdma.Options { return t.o }

// Close implements rdma.Transport.
func (t *Transport) Close() error { return nil }

// Dial implements rdma.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, opts rdma.DialOptions) (rdma.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.o.Timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rdma: dial %s: %w", addr, err)
	}
	c, err := t.handshake(ctx, nc, false, opts.Peer)
	if err != nil {
		return nil, fmt.Errorf("rdma: dial %s: %w", addr, err)
	}
	return c, nil
}

// handshake runs TLS and the hello exchange on a fresh connection and
// checks the peer's identity; on error the connection is closed.
func (t *Transport) handshake(ctx context.Context, nc net.Conn, server bool, want string) (c *conn, err error) {
	raw := &gatherConn{TCPConn: nc.(*net.TCPConn)}
	defer func() {
		if err != nil {
			raw.Close()
		}
	}()
	if err := tune(raw.TCPConn, t.o.Timeout); err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	var tc *tls.Conn
	if server {
		tc = tls.Server(raw, t.server)
	} else {
		tc = tls.Client(raw, t.client)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, authError(err)
	}
	peer := identity(tc.ConnectionState())
	var refusal error
	switch {
	case want != "" && peer != want:
		refusal = fmt.Errorf("%w: peer is %q, want %q", rdma.ErrAuth, peer, want)
	case t.o.Authorize != nil:
		if err := t.o.Authorize(peer); err != nil {
			refusal = fmt.Errorf("%w: peer %q: %w", rdma.ErrAuth, peer, err)
		}
	}
	// The dialer speaks first: a Hello, or a Close if it refuses the
	// listener. The listener reads it before it answers (a Hello, or a
	// Close if it refuses), so that neither side closes a socket with
	// unread data (a reset that could swallow the reason). A dialer whose
	// certificate the listener refused reads the TLS alert instead.
	if !server {
		if refusal != nil {
			return nil, sayRefusal(tc, CodeAuth, refusal)
		}
		if _, err := tc.Write(Header{Type: TypeHello}.Append(nil)); err != nil {
			return nil, authError(err)
		}
	}
	if err := readHello(tc); err != nil {
		if errors.Is(err, errVersion) {
			return nil, sayRefusal(tc, CodeVersion, err)
		}
		return nil, err
	}
	if server {
		if refusal != nil {
			return nil, sayRefusal(tc, CodeAuth, refusal)
		}
		if _, err := tc.Write(Header{Type: TypeHello}.Append(nil)); err != nil {
			return nil, err
		}
	}
	raw.SetDeadline(time.Time{})
	return newConn(t.o, tc, raw, peer), nil
}

// readHello reads the peer's first frame: a Hello, or a Close with the
// peer's reason.
func readHello(tc *tls.Conn) error {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return authError(err)
	}
	h, err := Decode(hdr[:])
	switch {
	case err != nil:
		return err
	case h.Type == TypeClose:
		reason := make([]byte, h.Length)
		io.ReadFull(tc, reason)
		return &peerClosed{code: h.Key, reason: string(reason)}
	case h.Type != TypeHello:
		return fmt.Errorf("%w: first frame of type %d, want hello", rdma.ErrProtocol, h.Type)
	}
	return nil
}

// sayRefusal sends a Close frame for err during the handshake and returns err.
func sayRefusal(tc *tls.Conn, code uint32, err error) error {
	tc.Write(closeFrame(nil, code, err.Error()))
	return err
}

// tune sets what a link needs of its socket: no Nagle delay, and a user
// timeout so that data the peer never acknowledges fails the link.
func tune(c *net.TCPConn, timeout time.Duration) error {
	if err := c.SetNoDelay(true); err != nil {
		return err
	}
	sc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout.Milliseconds()))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("rdma: TCP_USER_TIMEOUT: %w", serr)
	}
	return nil
}

// Listen implements rdma.Transport.
func (t *Transport) Listen(addr string) (rdma.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rdma: listen %s: %w", addr, err)
	}
	l := &listener{t: t, ln: ln, conns: make(chan *conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l, nil
}

type listener struct {
	t     *Transport
	ln    net.Listener
	conns chan *conn
	once  sync.Once
	done  chan struct{}
}

func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.ln.Close()
}

func (l *listener) Accept(ctx context.Context) (rdma.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, rdma.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) acceptLoop() {
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			l.Close()
			return
		}
		go l.serve(nc)
	}
}

// serve authenticates one connection (each in its own goroutine, so a slow
// or hostile dialer holds up no one) and hands it to Accept.
func (l *listener) serve(nc net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), l.t.o.Timeout)
	defer cancel()
	c, err := l.t.handshake(ctx, nc, true, "")
	if err != nil {
		l.t.o.Log.WithError(err).WithField("remote", nc.RemoteAddr().String()).Warn("rdma: refused a link")
		if l.t.o.OnReject != nil {
			l.t.o.OnReject(nc.RemoteAddr().String(), err)
		}
		return
	}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}
