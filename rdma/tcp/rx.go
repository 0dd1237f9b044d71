package tcp

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/shimmy-dev/shimmy/rdma"
)

// region is memory registered on one link.
type region struct {
	c   *conn
	key uint32
	mem []byte

	// mu is held (read) while the peer's data is copied in, so that Close
	// waits for a write in flight and nothing lands after it.
	mu     sync.RWMutex
	closed atomic.Bool // set under mu; read alone by this side's Post
}

func (r *region) Key() rdma.RemoteKey { return rdma.RemoteKey{Key: r.key, Len: uint64(len(r.mem))} }
func (r *region) Bytes() []byte       { return r.mem }

func (r *region) Close() error {
	r.c.regions.remove(r.key)
	r.mu.Lock()
	r.closed.Store(true)
	r.mu.Unlock()
	return nil
}

// regionTable maps the keys handed to the peer to regions. The map is
// copied on every change (rare) so that the receiver looks keys up
// without a lock.
type regionTable struct {
	mu   sync.Mutex // writers
	next uint32
	m    atomic.Pointer[map[uint32]*region]
}

func (t *regionTable) update(f func(m map[uint32]*region)) {
	m := make(map[uint32]*region)
	if old := t.m.Load(); old != nil {
		maps.Copy(m, *old)
	}
	f(m)
	t.m.Store(&m)
}

func (t *regionTable) add(r *region) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.update(func(m map[uint32]*region) {
		for t.next++; t.next == 0 || m[t.next] != nil; t.next++ {
		}
		r.key = t.next
		m[r.key] = r
	})
}

func (t *regionTable) get(key uint32) *region {
	if m := t.m.Load(); m != nil {
		return (*m)[key]
	}
	return nil
}

func (t *regionTable) remove(key uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.update(func(m map[uint32]*region) { delete(m, key) })
}

// directRead is the write size from which the receiver reads the data
// straight into the region rather than through its read buffer.
const directRead = 4 << 10

// receiver decodes the peer's frames and carries them out. It trusts
// nothing: every length is bounded by Decode and every write by the region
// it names.
type receiver struct {
	br      *bufio.Reader
	src     io.Reader // what br reads from
	regions *regionTable
	hdr     [HeaderLen]byte
	onImm   func(rdma.Completion) bool // false: the link is closing
	onCtrl  func([]byte) bool

	// held is the region whose read lock the receiver keeps across the
	// frames already buffered (a batch of writes into one ring), so as not
	// to pay a lock per frame; released before a read that may wait.
	held *region
}

// newReceiver reads frames from src (the TLS connection) into regions.
func newReceiver(src io.Reader, regions *regionTable, onImm func(rdma.Completion) bool, onCtrl func([]byte) bool) *receiver {
	return &receiver{br: bufio.NewReaderSize(src, readBuf), src: src, regions: regions, onImm: onImm, onCtrl: onCtrl}
}

// release drops the held region's lock.
func (rx *receiver) release() {
	if rx.held != nil {
		rx.held.mu.RUnlock()
		rx.held = nil
	}
}

// idle releases what the receiver holds if its next read may wait.
func (rx *receiver) idle() {
	if rx.br.Buffered() < HeaderLen {
		rx.release()
	}
}

// peerClosed is the error of a link the peer closed with a Close frame.
type peerClosed struct {
	code   uint32
	reason string
}

func (e *peerClosed) Error() string {
	return fmt.Sprintf("rdma: peer closed the link (code %d): %s", e.code, e.reason)
}

func (e *peerClosed) Unwrap() error {
	switch e.code {
	case CodeRegion:
		return rdma.ErrRegion
	case CodeProtocol, CodeVersion:
		return rdma.ErrProtocol
	case CodeAuth:
		return rdma.ErrAuth
	}
	return rdma.ErrClosed
}

// header reads and decodes the next frame header.
func (rx *receiver) header() (Header, error) {
	if _, err := io.ReadFull(rx.br, rx.hdr[:]); err != nil {
		return Header{}, err
	}
	return Decode(rx.hdr[:])
}

// next carries out one frame.
func (rx *receiver) next() error {
	h, err := rx.header()
	if err != nil {
		return err
	}
	switch h.Type {
	case TypeWrite, TypeWriteImm:
		if err := rx.write(h); err != nil {
			return err
		}
		if h.Type == TypeWriteImm {
			rx.release() // onImm may wait for the user, who may close a region
		}
		if h.Type == TypeWriteImm && !rx.onImm(rdma.Completion{Op: rdma.OpImm, Imm: h.Imm, Len: h.Length}) {
			return rdma.ErrClosed
		}
	case TypeControl:
		rx.release()
		msg := make([]byte, h.Length)
		if _, err := io.ReadFull(rx.br, msg); err != nil {
			return err
		}
		if !rx.onCtrl(msg) {
			return rdma.ErrClosed
		}
	case TypePing:
	case TypeClose:
		reason := make([]byte, h.Length)
		if _, err := io.ReadFull(rx.br, reason); err != nil {
			return err
		}
		return &peerClosed{code: h.Key, reason: string(reason)}
	default: // a second hello
		return fmt.Errorf("%w: unexpected frame type %d", rdma.ErrProtocol, h.Type)
	}
	return nil
}

// write copies a write frame's data into the region it names, after
// checking that the whole range lies inside it.
func (rx *receiver) write(h Header) error {
	r := rx.regions.get(h.Key)
	if r == nil {
		return fmt.Errorf("%w: peer wrote to unknown key %#x", rdma.ErrRegion, h.Key)
	}
	if r != rx.held {
		rx.release()
		r.mu.RLock()
		rx.held = r
	}
	size := uint64(len(r.mem))
	if r.closed.Load() || h.Offset > size || uint64(h.Length) > size-h.Offset {
		return fmt.Errorf("%w: peer wrote %d+%d into key %#x of %d bytes", rdma.ErrRegion, h.Offset, h.Length, h.Key, size)
	}
	dst := r.mem[h.Offset : h.Offset+uint64(h.Length)]
	if len(dst) < directRead {
		_, err := io.ReadFull(rx.br, dst)
		return err
	}
	// A large write skips the read buffer: what it holds already, then
	// straight from TLS into the region (one copy fewer).
	n, _ := rx.br.Read(dst[:min(len(dst), rx.br.Buffered())])
	_, err := io.ReadFull(rx.src, dst[n:])
	return err
}
