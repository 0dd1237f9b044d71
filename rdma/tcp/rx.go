package tcp

import (
	"bufio"
	"fmt"
	"io"
	"sync"

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
	closed bool
}

func (r *region) Key() rdma.RemoteKey { return rdma.RemoteKey{Key: r.key, Len: uint64(len(r.mem))} }
func (r *region) Bytes() []byte       { return r.mem }

func (r *region) Close() error {
	r.c.regions.remove(r.key)
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

// regionTable maps the keys handed to the peer to regions.
type regionTable struct {
	mu   sync.RWMutex
	next uint32
	m    map[uint32]*region
}

func (t *regionTable) add(r *region) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[uint32]*region)
	}
	for t.next++; t.next == 0 || t.m[t.next] != nil; t.next++ {
	}
	r.key = t.next
	t.m[r.key] = r
}

func (t *regionTable) get(key uint32) *region {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.m[key]
}

func (t *regionTable) remove(key uint32) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// receiver decodes the peer's frames and carries them out. It trusts
// nothing: every length is bounded by Decode and every write by the region
// it names.
type receiver struct {
	br      *bufio.Reader
	regions *regionTable
	hdr     [HeaderLen]byte
	onImm   func(rdma.Completion) bool // false: the link is closing
	onCtrl  func([]byte) bool
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
		if h.Type == TypeWriteImm && !rx.onImm(rdma.Completion{Op: rdma.OpImm, Imm: h.Imm, Len: h.Length}) {
			return rdma.ErrClosed
		}
	case TypeControl:
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
	r.mu.RLock()
	defer r.mu.RUnlock()
	size := uint64(len(r.mem))
	if r.closed || h.Offset > size || uint64(h.Length) > size-h.Offset {
		return fmt.Errorf("%w: peer wrote %d+%d into key %#x of %d bytes", rdma.ErrRegion, h.Offset, h.Length, h.Key, size)
	}
	_, err := io.ReadFull(rx.br, r.mem[h.Offset:h.Offset+uint64(h.Length)])
	return err
}
