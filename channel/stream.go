package channel

import (
	"context"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// ReaderOptions configure a stream Reader.
type ReaderOptions struct {
	Idle  Idle // how to wait for messages; zero value: IdleSleep
	Queue int  // the direction read, 0 or 1
}

// Reader takes messages from one queue of a stream ring, competing with
// the other readers of that queue: each message goes to exactly one
// reader. A reader claims the record at Head with a compare-and-swap,
// copies it out and marks it consumed; writers reuse the space once every
// record before it is consumed. Not safe for concurrent use.
type Reader struct {
	r  *Ring
	q  int
	qh *queueHeader
	m  *member
	w  waiter
	// stuck times a claim Head cannot pass, across calls: a caller that
	// waits in short calls must still unblock a dead publisher's claim.
	stuck stuckClaim
}

// NewReader joins a stream ring as a reader of queue o.Queue.
func (r *Ring) NewReader(o ReaderOptions) (*Reader, error) {
	if r.cfg.Type != TypeStream {
		return nil, fmt.Errorf("%w: readers take from stream rings; use NewSubscriber on pubsub", ErrWrongType)
	}
	if o.Queue < 0 || o.Queue > 1 {
		return nil, fmt.Errorf("%w: queue %d of a stream (0 or 1)", ErrConfig, o.Queue)
	}
	m, err := r.acquire(RoleSubscriber, o.Queue, 0)
	if err != nil {
		return nil, err
	}
	// Readers have no cursor of their own: mark the slot so raiseLimit
	// (pubsub only) and Members can tell.
	rd := &Reader{r: r, q: o.Queue, qh: r.queues[o.Queue], m: m}
	rd.w = newWaiter(o.Idle, m)
	return rd, nil
}

// Slot returns this reader's member slot (MemberInfo.Slot).
func (rd *Reader) Slot() uint32 { return rd.m.idx }

// Close leaves the ring. After the ring's Close, or during it, it does
// nothing (the ring may be unmapped).
func (rd *Reader) Close() error {
	rd.r.leaving(rd.m.release)
	return nil
}

// Next waits for a message, takes it and appends it to buf[:0].
func (rd *Reader) Next(ctx context.Context, buf []byte) ([]byte, error) {
	rd.w.ctx = ctx
	return rd.next(buf, true, nil)
}

// TryNext is Next without waiting: ErrWouldBlock when no message is ready.
func (rd *Reader) TryNext(buf []byte) ([]byte, error) { return rd.next(buf, false, nil) }

// take is what a journaled take brings: the journal, the owner's tag for
// the record, and which records to leave to other readers.
type take struct {
	j    *TakeJournal
	tag  uint64
	skip func(slot uint32, after Position) bool
}

// TryTake is TryNext for a reader that must not lose a record when its
// process dies (see TakeJournal): the record goes into j, with tag, before
// it is taken, and j marks it taken as soon as the take wins. The caller
// keeps the record where it belongs and then clears j (TakeJournal.Clear)
// before the next take. A record whose publisher slot and end position
// skip reports true is left at the head for other readers (ErrWouldBlock):
// the mirror does not take what its own importers wrote.
func (rd *Reader) TryTake(j *TakeJournal, tag uint64, skip func(slot uint32, after Position) bool, buf []byte) ([]byte, error) {
	if j.busy() {
		return buf, fmt.Errorf("%w: a taken record was not cleared", ErrJournal)
	}
	return rd.next(buf, false, &take{j: j, tag: tag, skip: skip})
}

func (rd *Reader) next(buf []byte, block bool, tk *take) ([]byte, error) {
	if err := rd.m.alive(); err != nil {
		return buf, err
	}
	r := rd.r
	rd.w.reset()
	for polls := 0; ; polls++ {
		h := pos(atomic.LoadUint64(&rd.qh.Head))
		// While spinning, poll the commit word alone (see Subscriber.peek).
		if block && polls&1023 != 1023 && rd.w.spinning() && !r.tagged(rd.q, h) {
			if err := rd.w.pause(r.parks[rd.q][0], nil); err != nil {
				return buf, err
			}
			continue
		}
		msg, frame, st, err := r.read(rd.q, h)
		switch st {
		case readCorrupt:
			// An evicted reader's slot is no longer its own to announce
			// a take in; and what it found is explained by its stall.
			if err := rd.m.alive(); err != nil {
				return buf, err
			}
			if atomic.LoadUint64(&rd.qh.Head) != uint64(h) {
				continue // read a record other readers took and writers reused
			}
			return buf, err
		case readPadding:
			atomic.CompareAndSwapUint64(&rd.qh.Head, uint64(h), uint64(mkpos(r.padSeq(rd.q, h, frame), h.units()+uint32(frame>>unitShift))))
			continue
		case readOK:
			next := mkpos(h.seq()+1, h.units()+uint32(frame>>unitShift))
			if tk != nil {
				// Copied before the take: if the take wins, no one took
				// the record since, and its bytes are intact.
				if err := tk.begin(rd, h, next, msg); err != nil {
					return buf, err
				}
			}
			// Announce the take before making it, so that a reaper can
			// release the record if this process dies holding it.
			atomic.StoreUint64(&rd.m.s.Pending, uint64(h))
			atomic.StoreUint64(&rd.m.s.PendingLen, frame)
			if !atomic.CompareAndSwapUint64(&rd.qh.Head, uint64(h), uint64(next)) {
				if tk != nil {
					tk.j.set(journalEmpty)
				}
				if err := rd.m.alive(); err != nil {
					return buf, err // the slot is someone else's now
				}
				atomic.StoreUint64(&rd.m.s.PendingLen, 0)
				continue
			}
			if tk != nil {
				tk.j.set(journalTaken)
				msg = tk.j.mem[journalHeader : journalHeader+len(msg)]
			}
			if testHookTaken != nil {
				testHookTaken()
			}
			buf = append(buf[:0], msg...)
			// Consume the record from the very word it was taken with: if
			// a reaper took this reader for dead meanwhile, it consumed the
			// record, writers may have reused the space, and what was
			// copied may be torn; a newer record there keeps its word.
			w := commitWord(h.units(), uint32(len(msg)))
			if !atomic.CompareAndSwapUint64(r.commitWord(rd.q, r.offset(h.units())), w, w|uint64(FlagConsumed)<<32) {
				rd.m.dead.Store(true)
				if tk != nil {
					// The journal's copy was made before the take: it is
					// intact, and the reaper delivered the record to no one.
					return buf, nil
				}
				return buf[:0], fmt.Errorf("%w: take at %d was reaped", ErrEvicted, h.units())
			}
			rd.m.clearPending()
			rd.m.counted(1)
			r.advanceRelease(rd.q)
			wake(&rd.qh.SpaceFutex, &rd.qh.SpaceWaiters)
			return buf, nil
		}
		if !block {
			return buf, ErrWouldBlock
		}
		if st == readClaimed {
			if now := monotonic(); rd.stuck.due(h, now, r.cfg.Lease/4) {
				r.unblockClaim(rd.q, h, now)
			}
		}
		ready := func() bool {
			_, _, st, _ := r.read(rd.q, pos(atomic.LoadUint64(&rd.qh.Head)))
			return st != readEmpty && st != readClaimed
		}
		if err := rd.w.pause(r.parks[rd.q][0], ready); err != nil {
			if ready() {
				// This reader may have been the one woken for the record:
				// pass the wake-up on to another.
				wakeN(&rd.qh.DataFutex, &rd.qh.DataWaiters, 1)
			}
			return buf, err
		}
	}
}

// begin checks whether the record at h (ending at next) is one to take,
// and records it in the journal: ErrWouldBlock if skip leaves it to others.
func (tk *take) begin(rd *Reader, h, next pos, msg []byte) error {
	r := rd.r
	if tk.skip != nil {
		slot := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.frame(rd.q, r.offset(h.units())).Slot))) & 0xffff
		if tk.skip(slot, next) {
			return ErrWouldBlock
		}
	}
	if len(msg) > len(tk.j.mem)-journalHeader {
		return fmt.Errorf("%w: a record of %d bytes in %d bytes of journal", ErrJournal, len(msg), len(tk.j.mem))
	}
	tk.j.begin(rd.q, rd.m.idx, rd.m.gen, r.cfg.Epoch, h, tk.tag, msg)
	return nil
}

// testHookTaken, set only by tests, runs after a reader took a record and
// before it copies it out: a test child dies there holding the take.
var testHookTaken func()

// advanceRelease moves Release of queue q over consumed records and
// padding, up to Head: the space behind Release is free for writers.
func (r *Ring) advanceRelease(q int) {
	qh := r.queues[q]
	for i := 0; i < 1024; i++ { // bounded: a corrupt ring cannot trap us
		rel := pos(atomic.LoadUint64(&qh.Release))
		head := pos(atomic.LoadUint64(&qh.Head))
		if udist(head.units(), rel.units()) == 0 || udist(head.units(), rel.units()) > r.capUnits {
			return
		}
		off := r.offset(rel.units())
		w := atomic.LoadUint64(r.commitWord(q, off))
		lf := uint32(w >> 32)
		n := uint64(lf & LengthMask)
		if uint32(w) != rel.units() || off+FrameHeaderLen+n > r.capacity {
			return
		}
		next := rel
		switch {
		case lf&FlagPadding != 0:
			next = mkpos(r.padSeq(q, rel, FrameHeaderLen+n), rel.units()+uint32((FrameHeaderLen+n)>>unitShift))
		case lf&FlagConsumed != 0:
			next = mkpos(rel.seq()+1, rel.units()+uint32(align16(FrameHeaderLen+n)>>unitShift))
		default:
			return // taken, still being copied
		}
		atomic.CompareAndSwapUint64(&qh.Release, uint64(rel), uint64(next))
	}
}

// reapTakes marks consumed the record at Release of queue q if every
// reader that announced taking it is dead: the message went with the
// reader that took it, and writers may go on.
func (r *Ring) reapTakes(q int, now int64) {
	qh := r.queues[q]
	rel := pos(atomic.LoadUint64(&qh.Release))
	head := pos(atomic.LoadUint64(&qh.Head))
	if udist(head.units(), rel.units()) == 0 || udist(head.units(), rel.units()) > r.capUnits {
		return
	}
	var owner *memberSlot
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if atomic.LoadUint32(&s.Role) != RoleSubscriber|uint32(q)<<8 || atomic.LoadUint64(&s.PendingLen) == 0 ||
			pos(atomic.LoadUint64(&s.Pending)) != rel {
			continue
		}
		if !r.expired(s, now) {
			return
		}
		owner = s
	}
	if owner == nil {
		return
	}
	cw := r.commitWord(q, r.offset(rel.units()))
	w := atomic.LoadUint64(cw)
	if uint32(w) == rel.units() && atomic.CompareAndSwapUint64(cw, w, w|uint64(FlagConsumed)<<32) {
		atomic.AddUint64(&qh.Reaped, 1)
	}
	atomic.StoreUint64(&owner.PendingLen, 0)
	r.advanceRelease(q)
	wake(&qh.SpaceFutex, &qh.SpaceWaiters)
}
