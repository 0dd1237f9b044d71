package channel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"unsafe"
)

// A TakeJournal is memory of a stream reader's own that outlives its
// process (a file of the reader's mapped MAP_SHARED on tmpfs: a store to it
// survives SIGKILL the moment it is made). Reader.TryTake copies each
// record into it before taking it and marks it taken right after the take
// wins, so a reader killed at any instant leaves either nothing, a record
// it took (TakeMine after its restart), or a record it was about to take,
// whose fate Ring.SettleTake reads from the ring. The mirror's exporter
// takes records for another host this way: a take that dies with its
// process is never lost.
//
// Layout (little-endian): state u32, queue u32, slot u32, gen u32, ring
// epoch u64, position u64, tag u64 (the owner's, e.g. the id the record
// gets), length u32, crc32 u32 of bytes 4..44 and the payload, payload.
// Not safe for concurrent use.
type TakeJournal struct {
	mem []byte
}

const (
	journalHeader = 48

	journalEmpty  = 0 // no take in flight
	journalTaking = 1 // copied, about to take (or taking, or lost the take)
	journalTaken  = 2 // the take won: the record is this journal's
)

// TakeJournalLen is the bytes a TakeJournal needs for a ring whose
// messages are at most maxMessage bytes.
func TakeJournalLen(maxMessage uint32) int { return journalHeader + int(maxMessage) }

// ErrJournal: the journal's memory is too small for the record, or holds
// a taken record its owner has not cleared.
var ErrJournal = errors.New("channel: take journal")

// NewTakeJournal uses mem (8-byte aligned, at least TakeJournalLen of the
// rings it serves) as a journal. What mem holds is kept: a journal
// reopened after a crash tells what the crashed process left.
func NewTakeJournal(mem []byte) (*TakeJournal, error) {
	if len(mem) < journalHeader || uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("%w: %d bytes of memory", ErrJournal, len(mem))
	}
	return &TakeJournal{mem: mem}, nil
}

func (j *TakeJournal) state() *uint32 { return (*uint32)(unsafe.Pointer(&j.mem[0])) }

func (j *TakeJournal) set(s uint32) { atomic.StoreUint32(j.state(), s) }

// journalRec is a journal's record as read back.
type journalRec struct {
	state, q, slot, gen uint32
	epoch               uint64
	at                  pos
	tag                 uint64
	msg                 []byte
}

// begin records the record msg at position at of queue q, about to be
// taken by the reader in slot (generation gen), with the owner's tag. The
// state goes to empty first, so that a process killed while the bytes
// change leaves nothing half written that looks valid.
func (j *TakeJournal) begin(q int, slot, gen uint32, epoch uint64, at pos, tag uint64, msg []byte) {
	j.set(journalEmpty)
	b := j.mem
	binary.LittleEndian.PutUint32(b[4:], uint32(q))
	binary.LittleEndian.PutUint32(b[8:], slot)
	binary.LittleEndian.PutUint32(b[12:], gen)
	binary.LittleEndian.PutUint64(b[16:], epoch)
	binary.LittleEndian.PutUint64(b[24:], uint64(at))
	binary.LittleEndian.PutUint64(b[32:], tag)
	binary.LittleEndian.PutUint32(b[40:], uint32(len(msg)))
	copy(b[journalHeader:], msg)
	binary.LittleEndian.PutUint32(b[44:], j.crc(len(msg)))
	j.set(journalTaking)
}

func (j *TakeJournal) crc(n int) uint32 {
	c := crc32.ChecksumIEEE(j.mem[4:44])
	return crc32.Update(c, crc32.IEEETable, j.mem[journalHeader:journalHeader+n])
}

// record reads the journal back; false if it holds no record.
func (j *TakeJournal) record() (journalRec, bool) {
	b := j.mem
	st := atomic.LoadUint32(j.state())
	n := int(binary.LittleEndian.Uint32(b[40:]))
	if st != journalTaking && st != journalTaken || n > len(b)-journalHeader || j.crc(n) != binary.LittleEndian.Uint32(b[44:]) {
		return journalRec{}, false
	}
	return journalRec{
		state: st, q: binary.LittleEndian.Uint32(b[4:]), slot: binary.LittleEndian.Uint32(b[8:]), gen: binary.LittleEndian.Uint32(b[12:]),
		epoch: binary.LittleEndian.Uint64(b[16:]), at: pos(binary.LittleEndian.Uint64(b[24:])), tag: binary.LittleEndian.Uint64(b[32:]),
		msg: b[journalHeader : journalHeader+n : journalHeader+n],
	}, true
}

// Taken returns the record the journal holds as taken and its tag: what
// the owner must keep before it calls Clear. The bytes are the journal's.
func (j *TakeJournal) Taken() (msg []byte, tag uint64, ok bool) {
	rec, ok := j.record()
	if !ok || rec.state != journalTaken {
		return nil, 0, false
	}
	return rec.msg, rec.tag, true
}

// Clear empties the journal: its owner has the taken record elsewhere now
// (or SettleTake found it was not the owner's).
func (j *TakeJournal) Clear() { j.set(journalEmpty) }

// busy reports whether the journal holds a taken record not yet cleared.
// Empty reports whether the journal holds no take (none in flight, none
// taken and not cleared): a process that died with it so had nothing of
// the ring's in hand.
func (j *TakeJournal) Empty() bool { return atomic.LoadUint32(j.state()) == journalEmpty }

func (j *TakeJournal) busy() bool { return atomic.LoadUint32(j.state()) == journalTaken }

// TakeOutcome is what SettleTake found of the take a journal holds.
type TakeOutcome int

const (
	// TakeNone: the journal holds no take.
	TakeNone TakeOutcome = iota
	// TakeMine: the record is the journal owner's (Taken returns it):
	// its reader took it, or took it and died before consuming it (the
	// ring has it consumed now). Keep it, then Clear.
	TakeMine
	// TakeOthers: another reader took the record, or no one has yet (it
	// is still in the ring for whoever takes it next). Clear.
	TakeOthers
	// TakeUndecided: a live reader is taking the record, and may be the
	// one that won it: ask again shortly.
	TakeUndecided
	// TakeUnknown: another reader consumed the record, and the reader
	// that was about to take it was dead longer than the ring's lease by
	// then, so a reaper may have consumed it for that reader in the few
	// instructions between its take and the journal's mark: treated as
	// TakeOthers, and worth a warning.
	TakeUnknown
)

// SettleTake finds out what became of the take a (reopened) journal holds
// for this ring. A taken record is the owner's whatever the ring shows;
// one about to be taken is decided by the ring:
//
//   - Head still at it: no one took it (TakeOthers).
//   - consumed or gone: the reader that took it consumed it, and a reader
//     consumes only what it took; the journal's reader consumes only after
//     marking the journal. Its own take record keeps reapers away from the
//     record while its lease runs, so the answer is exact if the reader's
//     lease has not run out; otherwise TakeUnknown.
//   - taken, not consumed: the reader that won it announced it in its slot
//     and keeps the announcement until it consumes. While another live
//     reader announces it: TakeUndecided. Otherwise every reader that may
//     have won it is dead, none delivered it, and SettleTake consumes it
//     for the journal (TakeMine): a reader stalled past its lease that
//     comes back finds it consumed and discards its copy (ErrEvicted).
//
// A taken record that the ring still shows unconsumed (the reader died
// right after its take) is consumed here too, so that writers need not
// wait for the dead reader's lease.
func (r *Ring) SettleTake(j *TakeJournal) TakeOutcome {
	rec, ok := j.record()
	if !ok {
		return TakeNone
	}
	q := int(rec.q)
	same := rec.epoch == r.cfg.Epoch && q < r.Queues() && r.cfg.Type == TypeStream
	if rec.state == journalTaken {
		if same {
			r.consumeTaken(q, rec.at, uint32(len(rec.msg)))
		}
		return TakeMine
	}
	if !same {
		return TakeOthers // the ring was re-created: its records are gone
	}
	qh := r.queues[q]
	h := rec.at
	cw := r.commitWord(q, r.offset(h.units()))
	w := atomic.LoadUint64(cw)
	head := pos(atomic.LoadUint64(&qh.Head))
	if head == h {
		return TakeOthers
	}
	lf := uint32(w >> 32)
	if d := udist(head.units(), h.units()); d == 0 || d > r.capUnits || uint32(w) != h.units() ||
		lf&(FlagPadding|FlagConsumed) != 0 || lf&LengthMask != uint32(len(rec.msg)) {
		// Consumed, and maybe reused since.
		if r.leaseRuns(rec.slot, rec.gen) {
			return TakeOthers
		}
		return TakeUnknown
	}
	if r.takerAlive(q, h, rec.slot, rec.gen) {
		return TakeUndecided
	}
	// Ours from the consume on: marked before it, so that a crash between
	// the two leaves a taken record, which the ring then shows consumed.
	j.set(journalTaken)
	if !atomic.CompareAndSwapUint64(cw, w, w|uint64(FlagConsumed)<<32) {
		j.set(journalTaking)
		return TakeUndecided // consumed just now: the next call sees by whom
	}
	r.advanceRelease(q)
	wake(&qh.SpaceFutex, &qh.SpaceWaiters)
	return TakeMine
}

// leaseRuns reports whether the member of slot (generation gen) is
// active and its lease has not run out.
func (r *Ring) leaseRuns(slot, gen uint32) bool {
	if slot >= r.cfg.MemberSlots {
		return false
	}
	s := r.slot(slot)
	return atomic.LoadUint32(&s.Gen) == gen && atomic.LoadUint32(&s.State) == MemberActive &&
		!r.leaseOut(atomic.LoadUint64(&s.Lease), monotonic())
}

// takerAlive reports whether a live reader other than slot (generation
// gen, the journal's dead one) announces a take of the record at h.
func (r *Ring) takerAlive(q int, h pos, slot, gen uint32) bool {
	now := monotonic()
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if i == slot && atomic.LoadUint32(&s.Gen) == gen {
			continue
		}
		if atomic.LoadUint32(&s.Role) == RoleSubscriber|uint32(q)<<8 && atomic.LoadUint32(&s.State) == MemberActive &&
			atomic.LoadUint64(&s.PendingLen) != 0 && pos(atomic.LoadUint64(&s.Pending)) == h && !r.expired(s, now) {
			return true
		}
	}
	return false
}

// consumeTaken consumes the record of n bytes at h that a journal's reader
// took and died before consuming, if the ring still shows it so.
func (r *Ring) consumeTaken(q int, h pos, n uint32) {
	qh := r.queues[q]
	cw := r.commitWord(q, r.offset(h.units()))
	w := atomic.LoadUint64(cw)
	head := pos(atomic.LoadUint64(&qh.Head))
	if d := udist(head.units(), h.units()); d == 0 || d > r.capUnits || w != commitWord(h.units(), n) {
		return
	}
	if atomic.CompareAndSwapUint64(cw, w, w|uint64(FlagConsumed)<<32) {
		r.advanceRelease(q)
		wake(&qh.SpaceFutex, &qh.SpaceWaiters)
	}
}
