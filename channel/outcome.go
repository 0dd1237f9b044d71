package channel

import (
	"sync/atomic"
	"unsafe"
)

// ClaimOutcome is what became of a claim, as the ring shows it: what a
// process that recorded a claim before committing it (Batch.Position,
// Publisher.Slot) and then died learns on its restart.
type ClaimOutcome int

const (
	// ClaimUnknown: the ring no longer shows it. It moved more than a
	// lap past the claim, whose frames are overwritten, or the position
	// is not one of a claim of that slot (a client wrote the frame).
	ClaimUnknown ClaimOutcome = iota
	// ClaimOpen: not committed. A publisher that is dead never commits
	// it; a reaper pads it.
	ClaimOpen
	// ClaimPadded: never committed; padding stands in for it (the
	// publisher closed, or a reaper took it for dead).
	ClaimPadded
	// ClaimCommitted: its messages are in the ring.
	ClaimCommitted
)

// ClaimOutcome reports what became of the claim whose first frame is
// at position at of queue q, made by the publisher in member slot slot. A
// claim is committed all at once (Publisher.CommitBatch), so its first
// frame tells. It reads that frame's commit word once, then the tail: a
// word read while the tail was within a lap of the claim is the claim's
// own, since only a claim that reaches a lap past it writes there.
func (r *Ring) ClaimOutcome(q int, at Position, slot uint32) ClaimOutcome {
	if q < 0 || q >= r.Queues() {
		return ClaimUnknown
	}
	off := r.offset(at.units())
	w := atomic.LoadUint64(r.commitWord(q, off))
	fslot := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.frame(q, off).Slot))) & 0xffff
	tail := pos(atomic.LoadUint64(&r.queues[q].Tail))
	if d := udist(tail.units(), at.units()); d == 0 || d > r.capUnits {
		return ClaimUnknown
	}
	switch {
	case uint32(w) != at.units():
		return ClaimOpen
	case uint32(w>>32) == FlagPadding && uint16(fslot) == SlotGap && r.version >= 2:
		return ClaimCommitted // a gap frame first (ClaimBatchLost), committed last
	case uint32(w>>32)&FlagPadding != 0:
		return ClaimPadded
	case fslot != slot:
		return ClaimUnknown
	}
	return ClaimCommitted
}
