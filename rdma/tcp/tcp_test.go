package tcp

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// linkPair links two fresh tcp transports of one CA.
func linkPair(t testing.TB, tune func(*rdma.Options)) (a, b *conn) {
	t.Helper()
	ca, err := certs.NewCA(certs.Options{Name: "ca"})
	if err != nil {
		t.Fatal(err)
	}
	tr := func(name string) *Transport {
		node, err := ca.Issue(certs.Options{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		o := rdma.Options{Certificate: node.TLS(), CA: ca.Pool()}
		if tune != nil {
			tune(&o)
		}
		tr, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	ln, err := tr("b").Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acc := make(chan rdma.Conn, 1)
	go func() {
		c, _ := ln.Accept(ctx)
		acc <- c
	}()
	ca1, err := tr("a").Dial(ctx, ln.Addr().String(), rdma.DialOptions{Peer: "b"})
	if err != nil {
		t.Fatal(err)
	}
	cb := <-acc
	if cb == nil {
		t.Fatal("no link accepted")
	}
	t.Cleanup(func() { ca1.Close(); cb.Close() })
	return ca1.(*conn), cb.(*conn)
}

// An authenticated peer that sends garbage loses its link, with the
// reason, and harms nothing else.
func TestGarbageClosesLink(t *testing.T) {
	for _, tc := range []struct {
		name    string
		garbage []byte
		want    error
	}{
		{"bad magic", make([]byte, HeaderLen), rdma.ErrProtocol},
		{"next version", func() []byte { b := Header{Type: TypePing}.Append(nil); b[OffVersion] = 2; return b }(), rdma.ErrProtocol},
		{"oversized control", Header{Type: TypeControl, Length: rdma.MaxControl + 1}.Append(nil), rdma.ErrProtocol},
		{"write to an unknown key", append(Header{Type: TypeWrite, Length: 4, Key: 77}.Append(nil), 1, 2, 3, 4), rdma.ErrRegion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := linkPair(t, nil)
			if err := a.lockWrite(nil); err != nil {
				t.Fatal(err)
			}
			a.batch = append(a.batch, tc.garbage...)
			if err := a.flush(); err != nil {
				t.Fatal(err)
			}
			a.unlockWrite()
			for _, c := range []*conn{a, b} {
				select {
				case <-c.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("%s's link still up", c.Peer())
				}
				if err := c.Err(); !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", c.Peer(), err, tc.want)
				}
			}
		})
	}
}

// Both ends of a link set TCP_NODELAY and a TCP user timeout equal to the
// link timeout, so that unacknowledged data fails a half-open link.
func TestSocketOptions(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	a, b := linkPair(t, func(o *rdma.Options) { o.Timeout = timeout })
	for _, c := range []*conn{a, b} {
		sc, err := c.raw.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ut, nd int
		var uerr, nerr error
		sc.Control(func(fd uintptr) {
			ut, uerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			nd, nerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		})
		if uerr != nil || nerr != nil {
			t.Fatal(uerr, nerr)
		}
		if ut != int(timeout.Milliseconds()) || nd != 1 {
			t.Errorf("%s: TCP_USER_TIMEOUT %d ms, TCP_NODELAY %d; want %d, 1", c.Peer(), ut, nd, timeout.Milliseconds())
		}
	}
}
