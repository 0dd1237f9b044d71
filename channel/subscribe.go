package channel

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// Start says where a new subscriber begins.
type Start int

const (
	// StartNewest: only messages published after the subscriber joined.
	StartNewest Start = iota
	// StartOldest: the oldest message still retained in the ring.
	StartOldest
	// StartAt: SubscriberOptions.At, a position this ring gave out (a
	// Subscriber's Position): the mirror resuming where a peer stopped.
	// A position more than a lap behind the tail (or ahead of it) starts
	// at the oldest retained message instead, and the messages between
	// them count as lost; with overwrite, one that publishers lap later
	// counts its losses as any lapped subscriber does.
	StartAt
)

// SubscriberOptions configure a Subscriber.
type SubscriberOptions struct {
	Idle  Idle     // how to wait for messages; zero value: IdleSleep
	From  Start    // StartNewest (default), StartOldest or StartAt
	At    Position // with StartAt: where to start
	Queue int      // reserved: pubsub rings have one queue
	// Lapped, if set, is called with the positions a subscriber that
	// publishers lapped skips from and to: the messages it counts lost
	// (to.Seq() - from.Seq()). The mirror's exporter tells its own
	// host's messages from imports among them.
	Lapped func(from, to Position)
	// DeafToQuiet: the commits of quiet publishers (PublisherOptions.Quiet)
	// do not end this subscriber's sleeps; every other publisher's do. The
	// mirror's exporter, which passes over what its own host's importer
	// writes, is not woken for it. Only while it sleeps on the futex word
	// itself: a process's goroutines beyond the first few sleepers wait
	// through a poller, which every wake-up ends.
	DeafToQuiet bool
}

// Subscriber reads every message of a pubsub ring, in order, at its own
// cursor. With the block policy the slowest live subscriber holds
// publishers back; with overwrite, a subscriber that falls a lap behind
// skips to the oldest intact record and counts what it lost. Not safe for
// concurrent use by several goroutines.
type Subscriber struct {
	r      *Ring
	q      int
	qh     *queueHeader
	m      *member
	w      waiter
	cur    pos
	lost   uint64
	gaps   uint64 // of lost: what gap frames reported
	viewed uint64 // frame bytes of the message handed out by Peek; 0: none
	// Messages and frame bytes read since Cursor was last stored: the
	// shared cursor is stored every cursorEveryMsgs messages or 1/16 of
	// the ring, before every wait and whenever a writer waits for space
	// (see flush).
	dirtyN, dirtyB uint64
	shared         pos        // the Cursor last stored
	stuck          stuckClaim // see Reader.stuck
	lapped         func(from, to Position)
}

// cursorEveryMsgs bounds how far the shared Cursor of a pubsub subscriber may
// lag its reads: cursorEveryMsgs messages, or a sixteenth of the ring.
// Storing it once per message would cost little on its own line, but a
// blocked publisher reading that line makes every store a cache miss.
const cursorEveryMsgs = 64

// NewSubscriber joins a pubsub ring as a subscriber.
func (r *Ring) NewSubscriber(o SubscriberOptions) (*Subscriber, error) {
	if r.cfg.Type != TypePubSub {
		return nil, fmt.Errorf("%w: subscribers read pubsub rings; use NewReader on a stream", ErrWrongType)
	}
	qh := r.queues[0]
	m, err := r.acquire(RoleSubscriber, 0, pos(atomic.LoadUint64(&qh.Tail)))
	if err != nil {
		return nil, err
	}
	s := &Subscriber{r: r, qh: qh, m: m, lapped: o.Lapped}
	s.w = newWaiter(o.Idle, m)
	if o.DeafToQuiet {
		s.w.bits = waitDeaf
	}
	// Settle on a start position that publishers have not passed: they
	// may have raised Limit before they saw this slot.
	for {
		tail := pos(atomic.LoadUint64(&qh.Tail))
		c, lost := tail, uint32(0)
		switch o.From {
		case StartOldest:
			c = r.oldest(0, tail)
		case StartAt:
			// Within a lap of the tail: there (with block, a subscriber
			// at At kept it; with overwrite, reading it finds out). The
			// chunk index oldest reads is coarser than that.
			c = o.At
			if udist(tail.units(), o.At.units()) > r.capUnits {
				c = r.oldest(0, tail)
				if d := c.seq() - o.At.seq(); d < 1<<31 {
					lost = d
				}
			}
		}
		if r.cfg.Policy == PolicyBlock {
			if lim := uint32(atomic.LoadUint64(&qh.Limit)); udist(c.units(), lim) >= 1<<31 {
				c = r.oldest(0, mkpos(tail.seq(), lim+r.capUnits))
			}
		}
		atomic.StoreUint64(&m.s.Cursor, uint64(c))
		lim := uint32(atomic.LoadUint64(&qh.Limit))
		if r.cfg.Policy == PolicyOverwrite || udist(c.units(), lim) < 1<<31 {
			s.cur, s.shared = c, c
			if lost != 0 {
				s.lost = uint64(lost)
				atomic.StoreUint64(&m.s.Lost, uint64(lost))
				if s.lapped != nil {
					s.lapped(o.At, c)
				}
			}
			return s, nil
		}
	}
}

// Close leaves the ring. After the ring's Close, or during it, it does
// nothing (the ring may be unmapped).
func (s *Subscriber) Close() error {
	s.r.leaving(func() {
		if s.m.close.Load() {
			return
		}
		s.m.release()
		wake(&s.qh.SpaceFutex, &s.qh.SpaceWaiters)
	})
	return nil
}

// Position returns the position of the next message: the one Peek
// returned until Done, else the one it will return. A subscriber opened
// with StartAt at this position reads on from there.
func (s *Subscriber) Position() Position { return s.cur }

// PublisherSlot returns the member slot recorded in the header of the
// message Peek returned (FOffSlot): which publisher wrote it, as far as
// the frame says (any client can write any value there). The mirror
// tells its own imports from local messages by it.
func (s *Subscriber) PublisherSlot() uint32 {
	return uint32(atomic.LoadUint32((*uint32)(unsafe.Pointer(&s.r.frame(s.q, s.r.offset(s.cur.units())).Slot))) & 0xffff)
}

// TryPeek is Peek without waiting: ErrWouldBlock when no message is ready.
func (s *Subscriber) TryPeek() ([]byte, error) { return s.peek(false) }

// Wait waits until a message is ready (or ctx is done) without reading it.
func (s *Subscriber) Wait(ctx context.Context) error {
	_, err := s.Peek(ctx)
	s.viewed = 0
	return err
}

// Flush stores the cursor in the shared slot now (it is otherwise stored
// every 64 messages, and before a wait): a subscriber that skips messages
// with TryPeek and Done, and then idles without waiting, frees the space
// behind it for block publishers.
func (s *Subscriber) Flush() { s.flush() }

// AppendNext is TryNext that appends the message to buf and also returns
// the member slot its frame names (PublisherSlot, read while the message
// was intact).
func (s *Subscriber) AppendNext(buf []byte) ([]byte, uint32, error) {
	n := len(buf)
	for {
		msg, err := s.peek(false)
		if err != nil {
			return buf, 0, err
		}
		slot := s.PublisherSlot()
		buf = append(buf[:n], msg...)
		if err := s.check(); err != nil {
			return buf[:n], 0, err
		}
		if s.unlapped() {
			s.Done()
			return buf, slot, nil
		}
		s.viewed = 0
		s.resync()
	}
}

// SkipIf passes the next message without copying it if skip, called
// with the member slot its frame names (PublisherSlot) and the position
// after it, says so, and reports whether it did; false leaves the message
// for the next read. ErrWouldBlock: no message is ready. The mirror's
// exporter passes over what its own importer wrote this way, however
// large.
func (s *Subscriber) SkipIf(skip func(slot uint32, after Position) bool) (bool, error) {
	for {
		if _, err := s.peek(false); err != nil {
			return false, err
		}
		slot := s.PublisherSlot()
		if !s.unlapped() { // the slot was read from an overwritten frame
			s.viewed = 0
			s.resync()
			continue
		}
		if skip(slot, s.after()) {
			s.Done()
			return true, nil
		}
		s.viewed = 0
		return false, nil
	}
}

// after is the position after the message Peek returned.
func (s *Subscriber) after() pos {
	return mkpos(s.cur.seq()+1, s.cur.units()+uint32(s.viewed>>unitShift))
}

// Abandon leaves the ring without freeing the slot, as if this process
// had died: its lease is no longer renewed and the slot goes on holding
// publishers (block policy) until the lease expires and someone reaps it.
// The mirror abandons a remote peer's slot when its agent stops, so that
// a restart within the lease loses nothing. Close after Abandon does
// nothing.
func (s *Subscriber) Abandon() {
	if s.m.close.CompareAndSwap(false, true) {
		s.r.untrack(s.m)
	}
}

// Lost returns how many messages this subscriber lost: to overwrite
// (publishers lapped it), and those gap frames it passed say were lost
// before they reached this ring (a mirror link's losses).
func (s *Subscriber) Lost() uint64 { return s.lost }

// Gaps returns how many of Lost were reported by gap frames: the mirror's
// exporter leaves them out of what it reports to other hosts, which get
// those messages from their origin themselves.
func (s *Subscriber) Gaps() uint64 { return s.gaps }

// Next waits for the next message and appends it to buf[:0].
func (s *Subscriber) Next(ctx context.Context, buf []byte) ([]byte, error) {
	msg, err := s.Peek(ctx)
	if err != nil {
		return buf, err
	}
	buf = append(buf[:0], msg...)
	if err := s.check(); err != nil {
		return buf, err
	}
	if !s.unlapped() {
		s.viewed = 0
		s.resync()
		return s.Next(ctx, buf)
	}
	s.Done()
	return buf, nil
}

// check runs after a message was copied out: with the block policy, a
// subscriber evicted meanwhile (it stalled past its lease) no longer held
// publishers back, and what it copied may be a newer message's bytes.
func (s *Subscriber) check() error {
	if s.r.cfg.Policy != PolicyBlock {
		return nil
	}
	if err := s.m.alive(); err != nil {
		s.viewed = 0
		return err
	}
	return nil
}

// TryNext is Next without waiting: ErrWouldBlock when no message is ready.
func (s *Subscriber) TryNext(buf []byte) ([]byte, error) {
	for {
		msg, err := s.peek(false)
		if err != nil {
			return buf, err
		}
		buf = append(buf[:0], msg...)
		if err := s.check(); err != nil {
			return buf, err
		}
		if s.unlapped() {
			s.Done()
			return buf, nil
		}
		s.viewed = 0
		s.resync()
	}
}

// Peek waits for the next message and returns it in place, without
// copying: the zero-copy read. The slice is valid until Done; check Valid
// after using it: with the overwrite policy publishers may lap it, and
// with block they may once this subscriber stalled past its lease.
func (s *Subscriber) Peek(ctx context.Context) ([]byte, error) {
	s.w.ctx = ctx
	return s.peek(true)
}

// Valid reports whether the message returned by Peek was not overwritten
// while it was read. With the block policy that holds while this
// subscriber is a member: it is false once it was evicted (it stalled past
// its lease), and Next then reports ErrEvicted.
func (s *Subscriber) Valid() bool {
	if s.r.cfg.Policy == PolicyBlock {
		return s.m.alive() == nil
	}
	return s.unlapped()
}

// unlapped is Valid once check has passed: with the block policy, check
// already asked whether this subscriber is still a member, and the
// per-message path does not ask twice.
func (s *Subscriber) unlapped() bool {
	if s.r.cfg.Policy == PolicyBlock {
		return true
	}
	t := pos(atomic.LoadUint64(&s.qh.Tail))
	return udist(t.units(), s.cur.units()) <= s.r.capUnits
}

// Done releases the message returned by Peek and advances the cursor.
func (s *Subscriber) Done() {
	if s.viewed == 0 {
		return
	}
	s.cur = s.after()
	s.dirtyN++
	s.dirtyB += s.viewed
	s.viewed = 0
	s.m.counted(1)
	if s.dirtyN >= cursorEveryMsgs || s.dirtyB >= s.r.capacity/16 || atomic.LoadUint32(&s.qh.SpaceWaiters) != 0 {
		s.flush()
	}
}

// SkipTo moves the cursor on to p without reading the messages before
// it, storing it and waking waiting publishers once. p must be a position
// this ring gave out at a message boundary, at or after the cursor and
// not past the tail: another reader's Position. The mirror's block slot
// for a peer follows its exporter's reader this way, a batch of
// thousands of messages per acknowledgement. ErrConfig if p is out of
// that range.
func (s *Subscriber) SkipTo(p Position) error {
	if s.viewed != 0 {
		return fmt.Errorf("%w: SkipTo before Done", ErrConfig)
	}
	if p == s.cur {
		return nil
	}
	if err := s.m.alive(); err != nil {
		return err
	}
	tail := pos(atomic.LoadUint64(&s.qh.Tail))
	units, n := udist(p.units(), s.cur.units()), udist(p.seq(), s.cur.seq())
	if units >= 1<<31 || n >= 1<<31 || udist(tail.units(), p.units()) >= 1<<31 || udist(tail.seq(), p.seq()) >= 1<<31 {
		return fmt.Errorf("%w: SkipTo %v, outside the cursor %v and the tail %v", ErrConfig, p, s.cur, tail)
	}
	s.cur = p
	s.dirtyN += uint64(n)
	s.dirtyB += uint64(units) << unitShift
	s.m.counted(uint64(n))
	s.flush()
	return nil
}

// flush stores the cursor for publishers (block policy: the space behind
// it is theirs again) and observers, and wakes writers waiting for space.
// It runs before every wait, so a subscriber with nothing to read never
// holds back space it has consumed.
func (s *Subscriber) flush() {
	if s.dirtyN == 0 && s.dirtyB == 0 {
		return
	}
	s.dirtyN, s.dirtyB = 0, 0
	if s.m.alive() != nil {
		return // the slot is no longer ours to write
	}
	if s.r.cfg.Policy != PolicyBlock {
		// A release store: the messages were read before the cursor
		// moves, without the full barrier atomic.Store would add.
		storeRelease(&s.m.s.Cursor, uint64(s.cur))
		return
	}
	// Sequentially consistent: wake looks at SpaceWaiters next, and a
	// release store could pass that load (section 11 of the ABI).
	storeSeqCst(&s.m.s.Cursor, uint64(s.cur))
	old := s.shared
	s.shared = s.cur
	if atomic.LoadUint32(&s.qh.SpaceWaiters) != 0 && s.r.mayHold(s.q, old.units()) {
		wake(&s.qh.SpaceFutex, &s.qh.SpaceWaiters)
	}
}

func (s *Subscriber) peek(block bool) ([]byte, error) {
	if s.viewed != 0 {
		return nil, fmt.Errorf("%w: Peek before Done", ErrConfig)
	}
	if err := s.m.alive(); err != nil {
		return nil, err
	}
	return s.look(block)
}

// look is peek once the subscriber knows it is a member: AppendBatch
// asks once per message, and a check after a copy asked already.
func (s *Subscriber) look(block bool) ([]byte, error) {
	r := s.r
	s.w.reset()
	for polls := 0; ; polls++ {
		// While spinning, poll the commit word alone: loading Tail on every
		// poll would take its cache line from the publishers each message.
		// Once spinning ends, every poll is a full read again.
		if block && polls&1023 != 1023 && s.w.spinning() && !r.tagged(s.q, s.cur) {
			s.flush()
			if err := s.w.pause(r.parks[s.q][0], nil); err != nil {
				return nil, err
			}
			continue
		}
		msg, frame, st, err := r.read(s.q, s.cur)
		switch st {
		case readOK:
			s.viewed = frame
			return msg, nil
		case readPadding:
			if seq, gap, ok := r.padNext(s.q, s.cur, frame); ok {
				s.cur = mkpos(seq, s.cur.units()+uint32(frame>>unitShift))
				s.dirtyB += frame
				if gap != 0 { // messages lost before they reached this ring
					s.gaps += gap
					s.lost += gap
					atomic.AddUint64(&s.m.s.Lost, gap)
				}
				continue
			}
			fallthrough // reclaimed while it was read: lapped
		case readLapped:
			if err := s.m.alive(); err != nil {
				return nil, err
			}
			s.resync()
			continue
		case readCorrupt:
			// Evicted (block: it stalled past its lease), this subscriber
			// held no one back, and publishers may have reused the frame
			// as it read it: that, not the ring, is what it found.
			if err := s.m.alive(); err != nil {
				return nil, err
			}
			return nil, err
		}
		if !block {
			s.flush() // the caller may wait by its own means now
			return nil, ErrWouldBlock
		}
		if st == readClaimed && (polls&63 == 0 || !s.w.spinning()) {
			// A publisher claimed this frame and has not committed it.
			// If it died, unblock it once its lease has run out (the clock
			// is read now and then: a live publisher commits in far less).
			if now := monotonic(); s.stuck.due(s.cur, now, r.cfg.Lease/4) {
				r.unblockClaim(s.q, s.cur, now)
			}
		}
		s.flush()
		cur := s.cur
		if err := s.w.pause(r.parks[s.q][0], func() bool {
			_, _, st, _ := r.read(s.q, cur)
			return st != readEmpty && st != readClaimed
		}); err != nil {
			return nil, err
		}
	}
}

// mayHold reports whether a member of queue q whose position was at
// units can have held back a writer waiting for room: one more than a lap
// less one claim's reach behind the tail. A writer waits for a claim that
// ends at most claimReach past a tail it read, and the tail only moves on,
// so a position nearer the tail than that blocked no one, and whoever
// moves it need not wake writers (section 11 of the ABI).
func (r *Ring) mayHold(q int, units uint32) bool {
	return udist(pos(atomic.LoadUint64(&r.queues[q].Tail)).units(), units) > r.capUnits-r.claimReach
}

// tagged reports whether the commit word at p carries p's tag: a frame is
// committed there (it still needs read's checks).
func (r *Ring) tagged(q int, p pos) bool {
	return uint32(atomic.LoadUint64(r.commitWord(q, r.offset(p.units())))) == p.units()
}

// resync moves a lapped subscriber to the oldest intact record and counts
// the messages it skipped.
func (s *Subscriber) resync() {
	c := s.r.oldest(s.q, pos(atomic.LoadUint64(&s.qh.Tail)))
	// A cursor ahead of the oldest message (a client wrote a padding
	// frame's Seq) lost nothing: never count a negative distance as 2^32.
	n := uint64(max(int32(c.seq()-s.cur.seq()), 0))
	s.lost += n
	atomic.AddUint64(&s.m.s.Lost, n)
	if s.lapped != nil && n != 0 {
		s.lapped(s.cur, c)
	}
	s.cur, s.shared = c, c
	s.dirtyN, s.dirtyB = 0, 0
	atomic.StoreUint64(&s.m.s.Cursor, uint64(c))
}

type readState int

const (
	readOK      readState = iota
	readEmpty             // nothing claimed at the position yet
	readClaimed           // claimed, not committed
	readPadding           // a padding frame: skip it
	readLapped            // overwritten (overwrite policy)
	readCorrupt           // a value out of bounds
)

// read inspects the frame at position p of queue q. Every value it takes
// from shared memory is checked before use: the returned slice always lies
// inside the frame's data region.
func (r *Ring) read(q int, p pos) ([]byte, uint64, readState, error) {
	qh := r.queues[q]
	off := r.offset(p.units())
	w := atomic.LoadUint64(r.commitWord(q, off))
	if uint32(w) != p.units() {
		t := pos(atomic.LoadUint64(&qh.Tail))
		d := udist(t.units(), p.units())
		switch {
		case d == 0:
			return nil, 0, readEmpty, nil
		case d > r.capUnits && r.cfg.Policy == PolicyOverwrite:
			return nil, 0, readLapped, nil
		}
		return nil, 0, readClaimed, nil
	}
	lf := uint32(w >> 32)
	n := uint64(lf & LengthMask)
	if lf&FlagPadding != 0 {
		// Padding never reaches past the tail (no claim made it so):
		// skipping such a frame would lap the reader, and resync could
		// bring it back to the same frame forever.
		t := pos(atomic.LoadUint64(&qh.Tail))
		if n%FrameAlign != 0 || off+FrameHeaderLen+n > r.capacity || uint64(udist(t.units(), p.units())) < (FrameHeaderLen+n)>>unitShift {
			return nil, 0, readCorrupt, fmt.Errorf("%w: padding of %d bytes at offset %d", ErrCorrupt, n, off)
		}
		return nil, FrameHeaderLen + n, readPadding, nil
	}
	if n > uint64(r.cfg.MaxMessage) || off+FrameHeaderLen+n > r.capacity {
		return nil, 0, readCorrupt, fmt.Errorf("%w: frame of %d bytes at offset %d (max %d)", ErrCorrupt, n, off, r.cfg.MaxMessage)
	}
	if testHookRead != nil {
		testHookRead()
	}
	if seq := atomic.LoadUint32(&r.frame(q, off).Seq); seq != p.seq() {
		if r.cfg.Policy == PolicyOverwrite {
			t := pos(atomic.LoadUint64(&qh.Tail))
			if udist(t.units(), p.units()) > r.capUnits {
				return nil, 0, readLapped, nil
			}
		}
		return nil, 0, readCorrupt, fmt.Errorf("%w: frame at offset %d has sequence %d, want %d", ErrCorrupt, off, seq, p.seq())
	}
	fo := r.data[q] + off + FrameHeaderLen
	return r.mem[fo : fo+n : fo+n], align16(FrameHeaderLen + n), readOK, nil
}

// testHookRead, set only by tests, runs in read between its loads of a
// data frame's commit word and of its Seq: a test laps the reader there.
var testHookRead func()

// padSeq returns the sequence that follows the padding frame of n bytes at
// position p of queue q (padNext), p's own if the frame was reclaimed
// while it was read: a stream reader or Release, which pass padding with
// a CAS that fails then, need nothing more.
func (r *Ring) padSeq(q int, p pos, n uint64) uint32 {
	s, _, _ := r.padNext(q, p, n)
	return s
}

// testHookPadding, set only by tests, runs in padNext before it loads the
// padding frame's fields: a test laps the reader there.
var testHookPadding func()

// padNext returns the sequence that follows the padding frame of n bytes
// at position p of queue q: its Seq field, which is p's own sequence, or
// further on when the padding stands in for messages (spans), and how
// many of those a gap frame says were lost before they reached the ring.
// Any other value is ignored; the next frame's check catches a corrupt
// ring. ok is false if the frame may have been reclaimed: publishers
// lapped p (overwrite) while its fields were read, so they may be a newer
// frame's, and the caller must not move on by them.
func (r *Ring) padNext(q int, p pos, n uint64) (seq uint32, gap uint64, ok bool) {
	off := r.offset(p.units())
	fh := r.frame(q, off)
	if testHookPadding != nil {
		testHookPadding()
	}
	s := atomic.LoadUint32(&fh.Seq)
	slot := uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&fh.Slot))))
	// The fields are the padding's only if no claim of the next lap
	// reached p before they were loaded: a publisher writes a frame's
	// fields after its claim moved Tail, and before its commit word, so a
	// second look at the commit word would not tell (section 10 of the
	// ABI). Tail within a lap of p confirms them.
	if udist(pos(atomic.LoadUint64(&r.queues[q].Tail)).units(), p.units()) > r.capUnits {
		return p.seq(), 0, false
	}
	k := s - p.seq()
	if k == 0 || !r.spans(k, uint32(n>>unitShift)) {
		return p.seq(), 0, true
	}
	if n == FrameHeaderLen && r.version >= 2 && slot == SlotGap {
		return s, uint64(k), true
	}
	return s, 0, true
}

// spans reports whether padding of units 16-byte units may stand in for k
// messages: at most one per unit in a version 1 ring; from version 2 on,
// where a gap frame stands for messages that never reached the ring, any
// forward step of sequence (below 2^31).
func (r *Ring) spans(k, units uint32) bool {
	if r.version < 2 {
		return k <= units
	}
	return k < 1<<31
}

// oldest finds the oldest record of queue q not yet reclaimed by claims up
// to tail, at the first chunk boundary whose index entry is current; the
// tail itself if none is.
func (r *Ring) oldest(q int, tail pos) pos {
	qh := r.queues[q]
	cu := r.chunkUnits
	low := tail.units() - r.capUnits
	b := (low + cu - 1) / cu * cu
	for i := 0; i < IndexChunks; i++ {
		e := pos(atomic.LoadUint64(&qh.Index[(b/cu)%IndexChunks]))
		// Current: at or after the boundary, at or before the tail, and
		// no further from the boundary than one frame.
		if udist(e.units(), b) <= udist(tail.units(), b) && udist(tail.units(), b) <= r.capUnits &&
			udist(e.units(), b) <= 2*uint32(align16(FrameHeaderLen+uint64(r.cfg.MaxMessage))>>unitShift) &&
			udist(tail.seq(), e.seq()) < 1<<31 {
			return e
		}
		b += cu
		if udist(tail.units(), b) > r.capUnits {
			break
		}
	}
	return tail
}

// stuckClaim times how long a reader has found the same claim uncommitted.
type stuckClaim struct {
	at    pos
	since int64 // clock reading when the reader first found it; 0: none
}

// due reports whether the claim at p has been found uncommitted for
// longer than every since it was first found (or since the last time due
// said so): time to try unblocking it.
func (c *stuckClaim) due(p pos, now int64, every time.Duration) bool {
	if c.since == 0 || c.at != p {
		c.at, c.since = p, now
		return false
	}
	if now-c.since <= int64(every) {
		return false
	}
	c.since = now
	return true
}

// unblockClaim pads over the claim at position p of queue q if every
// publisher that recorded a claim covering p is dead: what a reader stuck
// at p does. It scans the member table once.
func (r *Ring) unblockClaim(q int, p pos, now int64) bool {
	off := r.offset(p.units())
	w := atomic.LoadUint64(r.commitWord(q, off))
	if uint32(w) == p.units() {
		return false // committed
	}
	if udist(pos(atomic.LoadUint64(&r.queues[q].Tail)).units(), p.units()) == 0 {
		return false // not claimed
	}
	var owner *memberSlot
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if atomic.LoadUint32(&s.Role) != RolePublisher|uint32(q)<<8 {
			continue
		}
		n := atomic.LoadUint64(&s.PendingLen)
		start := pos(atomic.LoadUint64(&s.Pending)).units()
		if n == 0 || n > r.capacity || udist(p.units(), start) >= uint32(n>>unitShift) {
			continue
		}
		if !r.expired(s, now) {
			return false // a live publisher is still filling it
		}
		owner = s
	}
	return owner != nil && r.padDead(q, owner, p, w)
}

// reapClaim pads the claim recorded in publisher slot s of queue q, whose
// lease expired, from its first data frame, unless it was committed or
// lapped. It reports whether the claim holds no one back any more.
func (r *Ring) reapClaim(q int, s *memberSlot, now int64) bool {
	p := r.claimData(s)
	w := atomic.LoadUint64(r.commitWord(q, r.offset(p.units())))
	if uint32(w) != p.units() && r.expired(s, now) {
		r.padDead(q, s, p, w)
	}
	return r.settled(s)
}

// padDead pads the claim of the dead publisher in slot s from position p,
// where the commit word was stale. A claim that the ring lapped since is
// left alone: its space holds newer frames, and stale may be one of them
// (section 10 of the ABI). Several readers may get here at once: the one
// whose CAS turns the frame at p into padding does the rest.
func (r *Ring) padDead(q int, s *memberSlot, p pos, stale uint64) bool {
	qh := r.queues[q]
	n := atomic.LoadUint64(&s.PendingLen)
	start := pos(atomic.LoadUint64(&s.Pending)).units()
	if n == 0 || n > r.capacity || udist(p.units(), start) >= uint32(n>>unitShift) {
		return false // no claim, or not one covering p
	}
	// A claim lies behind the tail, and p within the lap behind it: one
	// the ring lapped since is settled, one reaching past the tail is a
	// corrupt record.
	tail := pos(atomic.LoadUint64(&qh.Tail)).units()
	if udist(tail, p.units()) > r.capUnits || udist(tail, start) < uint32(n>>unitShift) {
		return false
	}
	// A publisher's Cursor is the position after its claim, whose sequence
	// says how many messages the claim took; one that does not match the
	// claim's end (a client that does not record it) means a claim of one
	// message.
	e := start + uint32(n>>unitShift)
	end := pos(atomic.LoadUint64(&s.Cursor))
	if end.units() != e {
		end = mkpos(p.seq()+1, e)
	}
	if !r.padClaim(q, p, end, stale) {
		return false
	}
	atomic.CompareAndSwapUint64(&s.PendingLen, n, 0)
	atomic.AddUint64(&qh.Reaped, 1)
	wake(&qh.DataFutex, &qh.DataWaiters)
	wake(&qh.SpaceFutex, &qh.SpaceWaiters) // the claim held writers back too
	return true
}
