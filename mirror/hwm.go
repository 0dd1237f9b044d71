package mirror

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/shimmy-dev/shimmy/channel"
)

// hwmRec is an importer's high-water mark. Its markRec is where the
// origin resumes the flow: the end of the last batch the importer
// finished, a position the origin's batches name exactly. A batch goes
// into the local ring in parts (one claim each, waiting for room between
// them in a full block ring), so the rest says what the importer has
// beyond it: Have, and the part in flight, recorded before its commit so
// that an importer that died in the middle learns from the ring's own
// frames whether that part went in (reconcile). Nothing is published twice
// after a restart, whenever the agent died.
type hwmRec struct {
	markRec
	// Have: every record of the flow before this sequence is in the local
	// ring (never below Seq: next).
	Have uint64
	// Pend, when above next: the records before it go in with the claim
	// of the local ring (of epoch Ring) at At by the publisher in Slot.
	Pend uint64
	At   channel.Position
	Ring uint64
	Slot uint32
}

// hwmLen: the markRec as markLen bytes (what an agent before hwmRec
// stored, read as having nothing beyond it), then have, pend, at, ring,
// slot and a crc32 of those.
const hwmLen = markLen + 40

// next is the sequence of the first record the importer has not got.
func (r hwmRec) next() uint64 { return max(r.Seq, r.Have) }

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
	r := hwmRec{markRec: mr, Have: mr.Seq}
	if len(b) != hwmLen {
		return r
	}
	x := b[markLen:]
	if crc32.ChecksumIEEE(x[:36]) != binary.LittleEndian.Uint32(x[36:]) {
		return r
	}
	r.Have = max(r.Have, binary.LittleEndian.Uint64(x))
	r.Pend = binary.LittleEndian.Uint64(x[8:])
	r.At = channel.Position(binary.LittleEndian.Uint64(x[16:]))
	r.Ring = binary.LittleEndian.Uint64(x[24:])
	r.Slot = binary.LittleEndian.Uint32(x[32:])
	return r
}

// storeHWM replaces the mark with r in one write.
func (m *mark) storeHWM(r hwmRec) error {
	var b [hwmLen]byte
	encodeMark(b[:], r.markRec)
	x := b[markLen:]
	binary.LittleEndian.PutUint64(x, r.Have)
	binary.LittleEndian.PutUint64(x[8:], r.Pend)
	binary.LittleEndian.PutUint64(x[16:], uint64(r.At))
	binary.LittleEndian.PutUint64(x[24:], r.Ring)
	binary.LittleEndian.PutUint32(x[32:], r.Slot)
	binary.LittleEndian.PutUint32(x[36:], crc32.ChecksumIEEE(x[:36]))
	return m.write(b[:])
}

// reconcile settles the part a previous run left in flight: in if the
// ring shows its claim committed, or shows nothing any more (it lapped
// the claim, or a client overwrote the frame: taken as in, so that no
// message is published twice); out if the claim is open or padded (a
// dead publisher's claim is padded by a reaper) or the ring was
// re-created.
func (r hwmRec) reconcile(ring *channel.Ring, q int) hwmRec {
	if r.Pend <= r.next() {
		r.Pend = 0
		return r
	}
	if r.Ring == ring.Epoch() {
		switch ring.ClaimOutcome(q, r.At, r.Slot) {
		case channel.ClaimCommitted, channel.ClaimUnknown:
			r.Have = r.Pend
		}
	}
	r.Pend = 0
	return r
}
