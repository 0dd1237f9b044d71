package mirror

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/shimmy-dev/shimmy/channel"
)

// hwmRec is an importer's high-water mark and the state of its spool.
// Its markRec is where the origin resumes the flow: the end of the last
// batch the importer took into its spool, a position the origin's
// batches name exactly. The spool is a log of the records received and
// not yet in the ring, counted in bytes since the importer's first run:
// Tail is its end (bytes beyond it in the file are not the log's, a
// write a SIGKILL tore), Have how far the ring has it. The log goes
// into the ring in claims (waiting for room between them in a full block
// ring); the claim in flight is recorded before its commit, so that an
// importer that died in the middle learns from the ring's own frames
// whether it went in (reconcile). Nothing is published twice after a
// restart, whenever the agent died.
type hwmRec struct {
	markRec
	// Next: every record of the flow before this sequence is in the
	// spool or the ring (never below Seq: next).
	Next uint64
	// Tail and Have are spool log offsets: the log ends at Tail, and the
	// ring has every record before Have.
	Tail, Have uint64
	// The claim in flight, of the local ring of epoch Ring at At by the
	// publisher in Slot: with Pend above Have, the log's records before
	// Pend go in with it; with PendNext above next, the records of a
	// batch before that sequence, published straight from the batch (the
	// spool was empty and the ring had room), or by an agent before the
	// spool.
	Pend, PendNext uint64
	At             channel.Position
	Ring           uint64
	Slot           uint32
}

// hwmLen: the markRec as markLen bytes (what an agent before hwmRec
// stored, read as having nothing beyond it), then next, tail, have, pend,
// pend next, at, ring, slot and a crc32 of those. hwmV1Len is what an
// agent before the spool stored after the markRec: next and pend next
// (as "have" and "pend"), at, ring, slot and a crc32.
const (
	hwmLen   = markLen + 64
	hwmV1Len = markLen + 40
)

// next is the sequence of the first record the importer has not got.
func (r hwmRec) next() uint64 { return max(r.Seq, r.Next) }

// spooled is the bytes of records in the spool and not yet in the ring.
func (r hwmRec) spooled() uint64 { return r.Tail - r.Have }

// openHWM opens (creating) the high-water mark at path; a mark that holds
// nothing valid is the zero hwmRec.
func openHWM(path string) (*mark, hwmRec, error) {
	mk, b, err := openMarkFile(path, hwmLen)
	if err != nil {
		return nil, hwmRec{}, err
	}
	return mk, decodeHWM(b), nil
}

func decodeHWM(b []byte) hwmRec {
	mr, ok := decodeMark(b[:min(len(b), markLen)])
	if !ok {
		return hwmRec{}
	}
	r := hwmRec{markRec: mr}
	x := b[markLen:]
	switch {
	case len(b) == hwmLen && crc32.ChecksumIEEE(x[:60]) == binary.LittleEndian.Uint32(x[60:]):
		r.Next = binary.LittleEndian.Uint64(x)
		r.Tail = binary.LittleEndian.Uint64(x[8:])
		r.Have = min(binary.LittleEndian.Uint64(x[16:]), r.Tail)
		r.Pend = binary.LittleEndian.Uint64(x[24:])
		r.PendNext = binary.LittleEndian.Uint64(x[32:])
		r.At = channel.Position(binary.LittleEndian.Uint64(x[40:]))
		r.Ring = binary.LittleEndian.Uint64(x[48:])
		r.Slot = binary.LittleEndian.Uint32(x[56:])
	case len(b) == hwmV1Len && crc32.ChecksumIEEE(x[:36]) == binary.LittleEndian.Uint32(x[36:40]):
		r.Next = binary.LittleEndian.Uint64(x)
		r.PendNext = binary.LittleEndian.Uint64(x[8:])
		r.At = channel.Position(binary.LittleEndian.Uint64(x[16:]))
		r.Ring = binary.LittleEndian.Uint64(x[24:])
		r.Slot = binary.LittleEndian.Uint32(x[32:])
	}
	return r
}

// storeHWM replaces the mark with r in one write.
func (m *mark) storeHWM(r hwmRec) error {
	var b [hwmLen]byte
	encodeMark(b[:], r.markRec)
	x := b[markLen:]
	binary.LittleEndian.PutUint64(x, r.Next)
	binary.LittleEndian.PutUint64(x[8:], r.Tail)
	binary.LittleEndian.PutUint64(x[16:], r.Have)
	binary.LittleEndian.PutUint64(x[24:], r.Pend)
	binary.LittleEndian.PutUint64(x[32:], r.PendNext)
	binary.LittleEndian.PutUint64(x[40:], uint64(r.At))
	binary.LittleEndian.PutUint64(x[48:], r.Ring)
	binary.LittleEndian.PutUint32(x[56:], r.Slot)
	binary.LittleEndian.PutUint32(x[60:], crc32.ChecksumIEEE(x[:60]))
	return m.write(b[:])
}

// reconcile settles the claim a previous run left in flight: in if the
// ring shows it committed, or shows nothing any more (it lapped the
// claim, or a client overwrote the frame: taken as in, so that no
// message is published twice); out if the claim is open or padded (a
// dead publisher's claim is padded by a reaper) or the ring was
// re-created.
func (r hwmRec) reconcile(ring *channel.Ring, q int) hwmRec {
	in := func() bool {
		if r.Ring != ring.Epoch() {
			return false
		}
		o := ring.ClaimOutcome(q, r.At, r.Slot)
		return o == channel.ClaimCommitted || o == channel.ClaimUnknown
	}
	if r.Pend > r.Have && r.Pend <= r.Tail && in() {
		r.Have = r.Pend
	}
	if r.PendNext > r.next() && in() {
		r.Next = r.PendNext
	}
	r.Pend, r.PendNext = 0, 0
	return r
}
