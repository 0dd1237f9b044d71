// Package rdmatest is the conformance suite of rdma backends: every
// backend passes the same Run, unchanged (rdma/tcp in its tests; rdma/verbs
// on a host with an RDMA device, see docs/remote.md).
package rdmatest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shimmy-dev/shimmy/internal/wait"
	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// NewTransport makes a transport of the backend under test. A backend that
// cannot run on this machine returns an error matching rdma.ErrNoDevice,
// and Run skips with that reason.
type NewTransport func(rdma.Options) (rdma.Transport, error)

// Run runs the suite against a backend.
func Run(t *testing.T, newTransport NewTransport) {
	s := &suite{newTransport: newTransport, pki: newPKI(t)}
	if tr, err := newTransport(s.options("node-a")); errors.Is(err, rdma.ErrNoDevice) {
		t.Skipf("no RDMA device: %v", err)
	} else if err != nil {
		t.Fatal(err)
	} else {
		tr.Close()
	}
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"Auth", s.testAuth},
		{"Refused", s.testRefused},
		{"ImmAfterData", s.testImmAfterData},
		{"Bounds", s.testBounds},
		{"ForgedKey", s.testForgedKey},
		{"Large", s.testLarge},
		{"SmallBatched", s.testSmallBatched},
		{"Concurrent", s.testConcurrent},
		{"Control", s.testControl},
		{"Backpressure", s.testBackpressure},
		{"Close", s.testClose},
		{"HalfOpen", s.testHalfOpen},
	} {
		t.Run(tc.name, tc.run)
	}
}

type pki struct {
	ca, otherCA *certs.Pair
	nodes       map[string]*certs.Pair
	imposter    *certs.Pair // node-a's name, signed by another CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{nodes: map[string]*certs.Pair{}}
	must := func(pair *certs.Pair, e error) *certs.Pair {
		if e != nil {
			t.Fatal(e)
		}
		return pair
	}
	p.ca = must(certs.NewCA(certs.Options{Name: "cluster-ca"}))
	p.otherCA = must(certs.NewCA(certs.Options{Name: "other-ca"}))
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		p.nodes[n] = must(p.ca.Issue(certs.Options{Name: n}))
	}
	p.imposter = must(p.otherCA.Issue(certs.Options{Name: "node-a"}))
	return p
}

type suite struct {
	newTransport NewTransport
	pki          *pki
}

func (s *suite) options(node string) rdma.Options {
	return rdma.Options{
		Certificate: s.pki.nodes[node].TLS(),
		CA:          s.pki.ca.Pool(),
		Timeout:     5 * time.Second,
		Log:         quietLog(),
	}
}

// quietLog hides the refusals the suite provokes.
func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	return l
}

func (s *suite) transport(t *testing.T, o rdma.Options) rdma.Transport {
	t.Helper()
	tr, err := s.newTransport(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func (s *suite) listen(t *testing.T, o rdma.Options) rdma.Listener {
	t.Helper()
	ln, err := s.transport(t, o).Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pairOpts adjust a pair: a and b change node-a's (the dialer's) and
// node-b's (the listener's) options; proxy puts a proxy between them.
type pairOpts struct {
	a, b  func(*rdma.Options)
	proxy bool
	ln    rdma.Listener // node-b's listener, if the test made it
}

type pair struct {
	a, b  rdma.Conn
	proxy *proxy
}

// pair links node-a to node-b.
func (s *suite) pair(t *testing.T, po pairOpts) pair {
	t.Helper()
	oa, ob := s.options("node-a"), s.options("node-b")
	if po.a != nil {
		po.a(&oa)
	}
	if po.b != nil {
		po.b(&ob)
	}
	ln := po.ln
	if ln == nil {
		ln = s.listen(t, ob)
	}
	addr := ln.Addr().String()
	var p pair
	if po.proxy {
		p.proxy = newProxy(t, addr)
		addr = p.proxy.addr()
	}
	ctx := ctxT(t)
	type res struct {
		c   rdma.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept(ctx)
		acc <- res{c, err}
	}()
	a, err := s.transport(t, oa).Dial(ctx, addr, rdma.DialOptions{Peer: "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	r := <-acc
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	p.a, p.b = a, r.c
	return p
}

// mem maps anonymous memory (the verbs backend registers only memory
// outside the Go heap), unmapped after the links using it are closed.
func mem(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// region registers n bytes of mapped memory on c.
func region(t *testing.T, c rdma.Conn, b []byte) rdma.Region {
	t.Helper()
	r, err := c.Register(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// handKey sends r's key from one side to the other over the control
// channel, as the mirror does, and returns what the other side decoded.
func handKey(t *testing.T, from, to rdma.Conn, r rdma.Region) rdma.RemoteKey {
	t.Helper()
	b, _ := r.Key().AppendBinary(nil)
	if err := from.Send(ctxT(t), b); err != nil {
		t.Fatal(err)
	}
	got, err := to.Recv(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	k, err := rdma.ParseRemoteKey(got)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// target is a region of b (size bytes) whose key a holds, and a local
// source region of a (size bytes).
type target struct {
	dst, src []byte
	key      rdma.RemoteKey
	local    rdma.Region
}

func (s *suite) target(t *testing.T, p pair, size int) target {
	tg := target{dst: mem(t, size), src: mem(t, size)}
	tg.key = handKey(t, p.b, p.a, region(t, p.b, tg.dst))
	tg.local = region(t, p.a, tg.src)
	return tg
}

// waitImms waits for n OpImm completions on c and returns them in order.
func waitImms(t *testing.T, c rdma.Conn, n int) []rdma.Completion {
	t.Helper()
	ctx := ctxT(t)
	var got []rdma.Completion
	buf := make([]rdma.Completion, 64)
	for len(got) < n {
		k, err := c.Wait(ctx, buf)
		if err != nil {
			t.Fatalf("after %d of %d completions: %v", len(got), n, err)
		}
		for _, c := range buf[:k] {
			if c.Op == rdma.OpImm {
				got = append(got, c)
			}
		}
	}
	return got
}

// waitInOrder waits for n OpImm completions carrying immediates 0..n-1.
func waitInOrder(t *testing.T, c rdma.Conn, n int) {
	t.Helper()
	for i, c := range waitImms(t, c, n) {
		if c.Imm != uint32(i) {
			t.Fatalf("imm %d in place %d", c.Imm, i)
		}
	}
}

// same fails the test if the target region differs from the source.
func (tg target) same(t *testing.T, what string) {
	t.Helper()
	if sum(tg.dst) != sum(tg.src) {
		t.Fatal(what)
	}
}

func fill(b []byte, seed uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], seed*0x9e3779b97f4a7c15+uint64(i))
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(seed + uint64(i))
	}
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

func (s *suite) testAuth(t *testing.T) {
	p := s.pair(t, pairOpts{})
	if p.a.Peer() != "node-b" || p.b.Peer() != "node-a" {
		t.Errorf("peers: dialer sees %q, listener sees %q; want node-b, node-a", p.a.Peer(), p.b.Peer())
	}
}

// testRefused: peers that fail authentication never get a link, and the
// listener's existing link and region are untouched.
func (s *suite) testRefused(t *testing.T) {
	rejects := make(chan error, 16)
	ob := s.options("node-b")
	ob.OnReject = func(_ string, err error) { rejects <- err }
	ob.Authorize = func(peer string) error {
		if peer == "node-c" {
			return errors.New("not a configured peer")
		}
		return nil
	}
	ln := s.listen(t, ob)
	// A link of the listener with a region, which no refused peer may reach.
	p := s.pair(t, pairOpts{ln: ln})
	tg := s.target(t, p, 4096)
	noCert := s.options("node-a")
	noCert.Certificate.Certificate = nil
	noCert.Certificate.PrivateKey = nil
	imposter := s.options("node-a")
	imposter.Certificate = s.pki.imposter.TLS()
	for _, tc := range []struct {
		name     string
		o        rdma.Options
		peer     string
		rejected bool // the listener reports a refusal
	}{
		{"other CA", imposter, "", true},
		{"no client certificate", noCert, "", true},
		{"unauthorized node", s.options("node-c"), "", true},
		{"wrong listener identity", s.options("node-a"), "node-x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.transport(t, tc.o).Dial(ctxT(t), ln.Addr().String(), rdma.DialOptions{Peer: tc.peer})
			if err == nil {
				c.Post(rdma.Write{Remote: tg.key, Len: 16})
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, rdma.ErrAuth) {
				t.Errorf("dial: %v, want ErrAuth", err)
			}
			if tc.rejected {
				select {
				case rerr := <-rejects:
					if !errors.Is(rerr, rdma.ErrAuth) {
						t.Errorf("listener refused with %v, want ErrAuth", rerr)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("listener reported no refusal")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if c, err := ln.Accept(ctx); err == nil {
				t.Errorf("listener accepted a link from %q", c.Peer())
			}
		})
	}
	// A listener from another CA: the dialer refuses it.
	t.Run("listener from another CA", func(t *testing.T) {
		bad := s.options("node-b")
		bad.Certificate = s.pki.imposter.TLS()
		bad.Authorize = nil
		bln := s.listen(t, bad)
		if _, err := s.transport(t, s.options("node-a")).Dial(ctxT(t), bln.Addr().String(), rdma.DialOptions{}); !errors.Is(err, rdma.ErrAuth) {
			t.Errorf("dial: %v, want ErrAuth", err)
		}
	})
	for i, b := range tg.dst {
		if b != 0 {
			t.Fatalf("byte %d of the listener's region changed", i)
		}
	}
	if err := p.b.Err(); err != nil {
		t.Errorf("the listener's authenticated link failed: %v", err)
	}
}

// testImmAfterData: every immediate arrives after the data written with
// it and before it, in posting order.
func (s *suite) testImmAfterData(t *testing.T) {
	p := s.pair(t, pairOpts{})
	const chunk, n = 3000, 200
	tg := s.target(t, p, chunk*n)
	sums := make([][32]byte, n)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			off := uint64(i * chunk)
			fill(tg.src[off:off+chunk], uint64(i))
			sums[i] = sum(tg.src[off : off+chunk])
			// Two writes, the doorbell on the second: both must be in place.
			half := uint32(chunk / 2)
			if err := p.a.Post(
				rdma.Write{Local: tg.local, LocalOff: off, Len: half, Remote: tg.key, RemoteOff: off},
				rdma.Write{Local: tg.local, LocalOff: off + uint64(half), Len: chunk - half, Remote: tg.key, RemoteOff: off + uint64(half), WithImm: true, Imm: uint32(i), Signaled: true, ID: uint64(i)},
			); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ctx := ctxT(t)
	buf := make([]rdma.Completion, 16)
	for next := 0; next < n; {
		k, err := p.b.Wait(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range buf[:k] {
			if c.Op != rdma.OpImm || c.Imm != uint32(next) || c.Len != chunk-chunk/2 {
				t.Fatalf("completion %+v, want imm %d of %d bytes", c, next, chunk-chunk/2)
			}
			off := next * chunk
			if got := sum(tg.dst[off : off+chunk]); got != sums[next] {
				t.Fatalf("imm %d arrived before its data", next)
			}
			next++
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The writer's signaled completions, each once, in order.
	for next := 0; next < n; {
		k, err := p.a.Wait(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range buf[:k] {
			if c.Op != rdma.OpWrite || c.ID != uint64(next) {
				t.Fatalf("sender completion %+v, want write %d", c, next)
			}
			next++
		}
	}
}

// roundTrip proves a link still works: a control message each way.
func roundTrip(t *testing.T, p pair) {
	t.Helper()
	for _, d := range [][2]rdma.Conn{{p.a, p.b}, {p.b, p.a}} {
		if err := d[0].Send(ctxT(t), []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if m, err := d[1].Recv(ctxT(t)); err != nil || string(m) != "ping" {
			t.Fatalf("recv %q, %v", m, err)
		}
	}
}

// testBounds: writes outside a local region or outside the remote region
// as its key says are refused at posting, and the link stays up.
func (s *suite) testBounds(t *testing.T) {
	p := s.pair(t, pairOpts{})
	tg := s.target(t, p, 4096)
	other := region(t, p.b, mem(t, 4096)) // a region of the other side: not local to a
	for _, tc := range []struct {
		name string
		w    rdma.Write
	}{
		{"remote offset past end", rdma.Write{Local: tg.local, Len: 1, Remote: tg.key, RemoteOff: 4096}},
		{"remote range past end", rdma.Write{Local: tg.local, Len: 100, Remote: tg.key, RemoteOff: 4000}},
		{"remote offset wraps", rdma.Write{Local: tg.local, Len: 16, Remote: tg.key, RemoteOff: ^uint64(0) - 8}},
		{"local range past end", rdma.Write{Local: tg.local, LocalOff: 4090, Len: 16, Remote: tg.key}},
		{"no local region", rdma.Write{Len: 16, Remote: tg.key}},
		{"foreign local region", rdma.Write{Local: other, Len: 16, Remote: tg.key}},
	} {
		if err := p.a.Post(tc.w); !errors.Is(err, rdma.ErrRegion) {
			t.Errorf("%s: %v, want ErrRegion", tc.name, err)
		}
	}
	roundTrip(t, p)
	for i, b := range tg.dst {
		if b != 0 {
			t.Fatalf("byte %d of the region changed", i)
		}
	}
}

// testForgedKey: a write with a key the receiver never gave, or with a
// length it lied about, closes the link on both sides with ErrRegion and
// changes no byte outside the regions.
func (s *suite) testForgedKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		forge func(rdma.RemoteKey) rdma.RemoteKey
		off   uint64
	}{
		{"unknown key", func(k rdma.RemoteKey) rdma.RemoteKey { k.Key ^= 0x5a5a; return k }, 0},
		{"length lie", func(k rdma.RemoteKey) rdma.RemoteKey { k.Len *= 2; return k }, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s.pair(t, pairOpts{})
			guard := mem(t, 8192) // only the first half is registered
			key := tc.forge(handKey(t, p.b, p.a, region(t, p.b, guard[:4096])))
			src := region(t, p.a, mem(t, 4096))
			fill(src.Bytes(), 7)
			err := p.a.Post(rdma.Write{Local: src, Len: 64, Remote: key, RemoteOff: tc.off, WithImm: true, Imm: 1, Signaled: true})
			if err != nil && !errors.Is(err, rdma.ErrClosed) {
				t.Fatalf("post: %v", err)
			}
			for _, c := range []rdma.Conn{p.a, p.b} {
				select {
				case <-c.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("link of %s still up after a forged write", c.Peer())
				}
				if err := c.Err(); !errors.Is(err, rdma.ErrRegion) || !errors.Is(err, rdma.ErrClosed) {
					t.Errorf("%s's link closed with %v, want ErrClosed and ErrRegion", c.Peer(), err)
				}
			}
			buf := make([]rdma.Completion, 4)
			if n := p.b.Poll(buf); n != 0 {
				t.Errorf("receiver got completions %v for a refused write", buf[:n])
			}
			for i, b := range guard {
				if b != 0 {
					t.Fatalf("byte %d changed", i)
				}
			}
		})
	}
}

// testLarge: MiB writes arrive intact.
func (s *suite) testLarge(t *testing.T) {
	p := s.pair(t, pairOpts{})
	const size = 8 << 20
	tg := s.target(t, p, size)
	fill(tg.src, 42)
	ws := []rdma.Write{
		{Local: tg.local, Len: 4 << 20, Remote: tg.key},
		{Local: tg.local, LocalOff: 4 << 20, Len: 3 << 20, Remote: tg.key, RemoteOff: 4 << 20},
		{Local: tg.local, LocalOff: 7 << 20, Len: 1 << 20, Remote: tg.key, RemoteOff: 7 << 20, WithImm: true, Imm: 99},
	}
	if err := p.a.Post(ws...); err != nil {
		t.Fatal(err)
	}
	if c := waitImms(t, p.b, 1)[0]; c.Imm != 99 || c.Len != 1<<20 {
		t.Fatalf("completion %+v", c)
	}
	tg.same(t, "8 MiB arrived corrupted")
}

// testSmallBatched: many 16-byte writes in batches, counted and
// checksummed end to end.
func (s *suite) testSmallBatched(t *testing.T) {
	p := s.pair(t, pairOpts{})
	const msg, batch, batches = 16, 256, 200
	tg := s.target(t, p, msg*batch*batches)
	fill(tg.src, 3)
	go func() {
		ws := make([]rdma.Write, batch)
		for b := 0; b < batches; b++ {
			for i := range ws {
				off := uint64((b*batch + i) * msg)
				ws[i] = rdma.Write{Local: tg.local, LocalOff: off, Len: msg, Remote: tg.key, RemoteOff: off}
			}
			ws[batch-1].WithImm, ws[batch-1].Imm = true, uint32(b)
			if err := p.a.Post(ws...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	waitInOrder(t, p.b, batches)
	tg.same(t, "small writes arrived corrupted")
}

// testConcurrent: writers on several goroutines share a link; each one's
// writes land, in its own order.
func (s *suite) testConcurrent(t *testing.T) {
	p := s.pair(t, pairOpts{})
	const writers, per, size = 4, 100, 1024
	tg := s.target(t, p, writers*per*size)
	fill(tg.src, 11)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				off := uint64((w*per + i) * size)
				if err := p.a.Post(rdma.Write{Local: tg.local, LocalOff: off, Len: size, Remote: tg.key, RemoteOff: off, WithImm: true, Imm: uint32(w<<16 | i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	for _, c := range waitImms(t, p.b, writers*per) {
		w, i := int(c.Imm>>16), int(c.Imm&0xffff)
		if w >= writers || i != next[w] {
			t.Fatalf("imm %#x out of order (writer %d expected %d)", c.Imm, w, next[w%writers])
		}
		next[w]++
	}
	wg.Wait()
	tg.same(t, "concurrent writes arrived corrupted")
}

// testControl: control messages of every size arrive once, in order;
// oversized ones are refused.
func (s *suite) testControl(t *testing.T) {
	p := s.pair(t, pairOpts{})
	sizes := []int{0, 1, 100, 4096, rdma.MaxControl}
	go func() {
		for i, n := range sizes {
			m := make([]byte, n)
			fill(m, uint64(i))
			if err := p.a.Send(ctxT(t), m); err != nil {
				t.Error(err)
			}
		}
	}()
	for i, n := range sizes {
		m, err := p.b.Recv(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n)
		fill(want, uint64(i))
		if sum(m) != sum(want) {
			t.Fatalf("message %d: %d bytes, want %d intact", i, len(m), n)
		}
	}
	if err := p.a.Send(ctxT(t), make([]byte, rdma.MaxControl+1)); !errors.Is(err, rdma.ErrTooLarge) {
		t.Errorf("oversized: %v, want ErrTooLarge", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.b.Recv(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("recv with a cancelled context: %v", err)
	}
	roundTrip(t, p)
}

// testBackpressure: a receiver that does not poll holds the sender back
// instead of losing completions, for longer than the link timeout.
func (s *suite) testBackpressure(t *testing.T) {
	short := func(o *rdma.Options) { o.CQDepth, o.Timeout = 8, 500*time.Millisecond }
	p := s.pair(t, pairOpts{a: short, b: short})
	const n = 100
	tg := s.target(t, p, n*64)
	fill(tg.src, 5)
	posted := make(chan int, n)
	go func() {
		for i := 0; i < n; i++ {
			if err := p.a.Post(rdma.Write{Local: tg.local, LocalOff: uint64(i * 64), Len: 64, Remote: tg.key, RemoteOff: uint64(i * 64), WithImm: true, Imm: uint32(i)}); err != nil {
				t.Error(err)
				return
			}
			posted <- i
		}
	}()
	// Let the sender fill the queue, then stay away for twice the timeout.
	wait.Eventually(t, 10*time.Second, func() error {
		if len(posted) < 8 {
			return fmt.Errorf("%d posted", len(posted))
		}
		return nil
	})
	time.Sleep(time.Second)
	waitInOrder(t, p.b, n)
	tg.same(t, "data corrupted")
	if err := p.a.Err(); err != nil {
		t.Fatalf("link failed under backpressure: %v", err)
	}
}

// testClose: a closed link fails both ends with ErrClosed, and every
// later operation too.
func (s *suite) testClose(t *testing.T) {
	p := s.pair(t, pairOpts{})
	tg := s.target(t, p, 64)
	if err := p.a.Post(rdma.Write{Local: tg.local, Len: 64, Remote: tg.key, WithImm: true, Imm: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.a.Send(ctxT(t), []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if c := waitImms(t, p.b, 1)[0]; c.Imm != 1 {
		t.Errorf("completion %+v", c)
	}
	p.a.Close()
	select {
	case <-p.b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not notice the close")
	}
	// A message sent before the close is still delivered after it.
	if m, err := p.b.Recv(ctxT(t)); err != nil || string(m) != "bye" {
		t.Fatalf("recv %q, %v", m, err)
	}
	for _, c := range []rdma.Conn{p.a, p.b} {
		if err := c.Err(); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("%s: %v, want ErrClosed", c.Peer(), err)
		}
		if err := c.Post(rdma.Write{Local: tg.local, Len: 1, Remote: tg.key}); c == p.a && !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("post after close: %v", err)
		}
		if err := c.Send(ctxT(t), nil); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("send after close: %v", err)
		}
	}
}

// testHalfOpen: a link over which bytes stop flowing while its sockets
// stay open is closed with ErrTimeout within the timeout on both sides; a
// cut link is noticed; an idle link stays up on heartbeats alone.
func (s *suite) testHalfOpen(t *testing.T) {
	const timeout = 600 * time.Millisecond
	short := func(o *rdma.Options) { o.Timeout, o.Heartbeat = timeout, timeout/6 }
	for _, tc := range []struct {
		name  string
		fault func(*proxy)
		want  error
	}{
		{"frozen", (*proxy).freeze, rdma.ErrTimeout},
		{"cut", (*proxy).cut, rdma.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := s.pair(t, pairOpts{a: short, b: short, proxy: true})
			// Idle for several timeouts: the heartbeats keep it up.
			time.Sleep(3 * timeout)
			roundTrip(t, p)
			tc.fault(p.proxy)
			start := time.Now()
			for _, c := range []rdma.Conn{p.a, p.b} {
				select {
				case <-c.Done():
				case <-time.After(20 * timeout):
					t.Fatalf("%s: link still up %v after it was %s", c.Peer(), time.Since(start), tc.name)
				}
				if err := c.Err(); !errors.Is(err, tc.want) || !errors.Is(err, rdma.ErrClosed) {
					t.Errorf("%s: %v, want %v", c.Peer(), err, tc.want)
				}
			}
		})
	}
}
