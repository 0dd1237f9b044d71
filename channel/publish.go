package channel

import (
	"context"
	"fmt"
	"sync/atomic"
)

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	Idle  Idle // how to wait for space (block policy); zero value: IdleSleep
	Queue int  // stream channels: the direction written, 0 or 1
	// Exclusive makes this the queue's only publisher (as Aeron's
	// ExclusivePublication): it stores the tail instead of claiming it with
	// a CAS, which keeps every full barrier off the per-message path.
	// Joining fails with ErrExclusive while other publishers write the
	// queue, and they fail to join while it holds it.
	Exclusive bool
	// Quiet (pubsub): commits do not wake the subscribers that asked not
	// to be woken by quiet publishers (SubscriberOptions.DeafToQuiet);
	// WakeAll wakes them. The mirror's importer publishes quietly: the
	// exporters of its own host pass over what it writes.
	Quiet bool
	// Reserver (block pubsub): this publisher ignores the queue's
	// reservation (the Reserve word, section 9 of the ABI) and may hold
	// it (Publisher.Reserve). The mirror's importer is one: while it holds
	// records it could not place, the ring's room is its.
	Reserver bool
}

// Publisher appends messages to one queue of a ring. Many publishers, in
// any processes, may write one queue at once: each claims its frame with a
// compare-and-swap on the tail, fills it, and commits it by storing the
// frame's commit word last. A Publisher is not safe for concurrent use by
// several goroutines; open one per goroutine.
type Publisher struct {
	r     *Ring
	q     int
	qh    *queueHeader
	m     *member
	w     waiter
	run   run
	one   [1]int // sizes of a one-frame claim
	sizes []int  // PublishBatch's, reused
	out   bool   // a claim is outstanding
	quiet bool   // PublisherOptions.Quiet
	batch bool   // ... and it came from ClaimBatch
	ex    bool   // exclusive: Tail is ours to store
	slow  slowest
	// heed: a publisher of a block pubsub queue that waits while a
	// Reserver holds the queue; reserver: PublisherOptions.Reserver;
	// holding: it holds the queue (Reserve).
	heed, reserver, holding bool
}

// slowest is the subscriber that held the limit at the last scan of the
// member table: while it still blocks a claim, so does the limit, and a
// publisher that lacks room looks at its slot alone instead of scanning
// them all again each time it wakes.
type slowest struct {
	slot uint32 // slot+1; 0: none known
	gen  uint32
}

// Claim is a frame reserved for a message: fill Buf, then Commit it.
type Claim struct {
	Buf []byte
	p   pos    // frame position (after any padding)
	off uint64 // frame offset in the data region
	n   int
}

// NewPublisher joins the ring as a publisher.
func (r *Ring) NewPublisher(o PublisherOptions) (*Publisher, error) {
	if o.Queue < 0 || uint64(o.Queue) >= r.cfg.queues() {
		return nil, fmt.Errorf("%w: queue %d of a %d-queue ring", ErrConfig, o.Queue, r.cfg.queues())
	}
	m, err := r.acquire(RolePublisher, o.Queue, 0)
	if err != nil {
		return nil, err
	}
	p := &Publisher{r: r, q: o.Queue, qh: r.queues[o.Queue], m: m, ex: o.Exclusive, quiet: o.Quiet, reserver: o.Reserver}
	p.heed = !o.Reserver && r.cfg.Type == TypePubSub && r.cfg.Policy == PolicyBlock
	p.w = newWaiter(o.Idle, m)
	// Announce first, then look (both sides do): with sequentially
	// consistent atomics at least one of two racing joiners sees the other.
	if o.Exclusive {
		if !atomic.CompareAndSwapUint32(&p.qh.Exclusive, 0, m.idx+1) {
			m.release()
			return nil, fmt.Errorf("%w: queue %d", ErrExclusive, o.Queue)
		}
		if r.otherPublishers(o.Queue, m.idx) {
			atomic.CompareAndSwapUint32(&p.qh.Exclusive, m.idx+1, 0)
			m.release()
			return nil, fmt.Errorf("%w: other publishers write queue %d", ErrExclusive, o.Queue)
		}
	} else if x := atomic.LoadUint32(&p.qh.Exclusive); x != 0 {
		m.release()
		return nil, fmt.Errorf("%w: queue %d (slot %d)", ErrExclusive, o.Queue, x-1)
	}
	return p, nil
}

// otherPublishers reports whether a live publisher other than slot self
// writes queue q.
func (r *Ring) otherPublishers(q int, self uint32) bool {
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if i != self && atomic.LoadUint32(&s.State) != MemberFree && atomic.LoadUint32(&s.Role) == RolePublisher|uint32(q)<<8 {
			return true
		}
	}
	return false
}

// Close leaves the ring. An outstanding claim is committed as padding.
// After the ring's Close, or during it, it does nothing (the ring may be
// unmapped).
func (p *Publisher) Close() error {
	p.r.leaving(func() {
		if p.m.close.Load() {
			return
		}
		if p.out {
			p.abort()
		}
		if p.ex {
			atomic.CompareAndSwapUint32(&p.qh.Exclusive, p.m.idx+1, 0)
		}
		if p.reserver {
			p.r.unreserve(p.q, p.m.idx+1)
		}
		p.m.release()
	})
	return nil
}

// Slot returns this publisher's member slot: what the frames it writes
// carry at FOffSlot.
func (p *Publisher) Slot() uint32 { return p.m.idx }

// Publish copies msg into the ring as one message. With the block policy it
// waits for space until ctx is done.
func (p *Publisher) Publish(ctx context.Context, msg []byte) error {
	c, err := p.Claim(ctx, len(msg))
	if err != nil {
		return err
	}
	copy(c.Buf, msg)
	return p.Commit(c)
}

// TryPublish is Publish without waiting: ErrWouldBlock when the ring is full.
func (p *Publisher) TryPublish(msg []byte) error {
	c, err := p.claim(nil, len(msg), false)
	if err != nil {
		return err
	}
	copy(c.Buf, msg)
	return p.Commit(c)
}

// Claim reserves a frame for an n-byte message, to be filled in place and
// committed with Commit: the zero-copy path. Subscribers cannot pass an
// uncommitted claim, so commit promptly.
func (p *Publisher) Claim(ctx context.Context, n int) (Claim, error) {
	return p.claim(ctx, n, true)
}

func (p *Publisher) claim(ctx context.Context, n int, block bool) (Claim, error) {
	p.one[0] = n
	if _, err := p.claimRun(ctx, p.one[:], 0, block); err != nil {
		return Claim{}, err
	}
	p.batch = false
	return Claim{Buf: p.buf(0), p: p.run.fp, off: p.run.off[0], n: n}, nil
}

// run is the publisher's claim in flight: its first frame (a gap frame,
// or the first data frame), and the offset and payload length of each of
// its data frames.
type run struct {
	at    pos      // the claim's start (its padding at the wrap, if any)
	fp    pos      // first frame (after any padding at the wrap)
	gap   uint32   // messages the gap frame at fp stands for; 0: no gap frame
	off   []uint64 // data frame offsets in the data region
	lens  []int    // payload bytes
	stale uint64   // the first frame's commit word before the claim: commit CASes from it
}

// end is the position after the claim's last frame.
func (rn *run) end(r *Ring) pos {
	n := uint64(FrameHeaderLen) // a gap frame alone
	if last := len(rn.lens) - 1; last >= 0 {
		n = rn.off[last] + align16(FrameHeaderLen+uint64(rn.lens[last])) - r.offset(rn.fp.units())
	}
	return mkpos(rn.fp.seq()+rn.gap+uint32(len(rn.lens)), rn.fp.units()+uint32(n>>unitShift))
}

// buf returns frame i's payload in the ring.
func (p *Publisher) buf(i int) []byte {
	fo := p.r.data[p.q] + p.run.off[i] + FrameHeaderLen
	n := uint64(p.run.lens[i])
	return p.r.mem[fo : fo+n : fo+n]
}

// claimRun claims frames for a prefix of sizes, at least the first, in
// one claim: as many as fit before the end of the ring, in the room free
// now (it waits, if block, only for the first) and in one largest frame's
// bytes (the index, section 7 of the ABI, points at claim boundaries,
// and a reader that looks for the oldest record trusts an entry only that
// close to its boundary). With gap, a gap frame standing for that many
// lost messages goes first, counted in those bytes: when it does not fit
// with the first frame it goes alone. It returns the number of data frames
// claimed.
func (p *Publisher) claimRun(ctx context.Context, sizes []int, gap uint32, block bool) (int, error) {
	if p.out {
		return 0, fmt.Errorf("%w: previous claim not committed", ErrConfig)
	}
	if len(sizes) == 0 && gap == 0 {
		return 0, fmt.Errorf("%w: a claim of no frames", ErrConfig)
	}
	r := p.r
	if gap != 0 && (gap >= 1<<31 || r.version < 2 || r.cfg.Type != TypePubSub) {
		return 0, fmt.Errorf("%w: a gap of %d messages in a version %d %v ring", ErrConfig, gap, r.version, r.cfg.Type)
	}
	largest := uint64(r.cfg.MaxMessage)
	limit := align16(FrameHeaderLen + largest) // bytes of data frames in one claim
	var head uint64                            // what must fit: the gap frame and the first data frame
	if gap != 0 {
		head = FrameHeaderLen
	}
	data0 := 0 // data frames the claim must hold: the first, unless the gap goes alone
	if len(sizes) > 0 {
		if n := sizes[0]; n < 0 || uint64(n) > largest {
			return 0, fmt.Errorf("%w: %d bytes, maximum %d", ErrTooLarge, n, largest)
		}
		if f := align16(FrameHeaderLen + uint64(sizes[0])); head+f <= limit || gap == 0 {
			head += f
			data0 = 1
		}
	}
	if err := p.m.alive(); err != nil {
		return 0, err
	}
	p.w.ctx = ctx
	p.w.reset()
	for {
		// A Reserver's reservation: the ring is full for this publisher.
		if p.heed && p.reserved() {
			if !block {
				return 0, ErrWouldBlock
			}
			if err := p.w.pause(r.parks[p.q][1], func() bool { return !p.reserved() }); err != nil {
				return 0, err
			}
			continue
		}
		if p.holding {
			p.reserve() // another Reserver may have cleared it
		}
		t := pos(atomic.LoadUint64(&p.qh.Tail))
		off := r.offset(t.units())
		var pad uint64
		if off+head > r.capacity {
			pad, off = r.capacity-off, 0 // padding to the end of the ring
		}
		avail := uint64(p.avail(t)) << unitShift
		if pad+head > avail {
			end := t.units() + uint32((pad+head)>>unitShift)
			if !p.room(end) {
				if !block {
					return 0, ErrWouldBlock
				}
				if err := p.w.pause(r.parks[p.q][1], p.roomHolding(end)); err != nil {
					return 0, err
				}
				continue
			}
			// room made space for the first frame (raising the limit,
			// which may leave room for more).
			avail = max(pad+head, uint64(p.avail(t))<<unitShift)
		}
		// Extend the claim over the next frames while they fit.
		data, k := head, data0
		for ; k < len(sizes) && data0 == 1; k++ {
			n := sizes[k]
			if n < 0 || uint64(n) > largest {
				break // the caller's next claim reports it
			}
			f := align16(FrameHeaderLen + uint64(n))
			if data+f > limit || off+data+f > r.capacity || pad+data+f > avail {
				break
			}
			data += f
		}
		total := pad + data
		end := t.units() + uint32(total>>unitShift)
		// Record the claim before making it, so that a reaper can unblock
		// it if this process dies before committing: where it starts, how
		// long it is, and (in the publisher's Cursor) the position after
		// it, whose sequence tells a reaper how many messages to pass.
		// Plain stores: the Tail CAS, or the exclusive publisher's release
		// store of Tail (an opaque call the compiler cannot move them
		// past), publishes them with the claim. Only into a slot that is
		// still ours: this loop may have waited long.
		if testHookClaiming != nil {
			testHookClaiming()
		}
		if err := p.m.alive(); err != nil {
			return 0, err
		}
		next := mkpos(t.seq()+gap+uint32(k), end)
		p.m.s.Pending = uint64(t)
		p.m.s.Cursor = uint64(next)
		p.m.s.PendingLen = total
		if p.ex {
			// The only writer of Tail, as long as the queue is still ours:
			// a reaper that took us for dead gave it to others.
			if err := p.exclusive(); err != nil {
				return 0, err
			}
			storeRelease(&p.qh.Tail, uint64(next))
		} else if !atomic.CompareAndSwapUint64(&p.qh.Tail, uint64(t), uint64(next)) {
			// Withdraw the record: others must not wait on a claim that
			// was never made while this publisher waits for room. A slot
			// reaped meanwhile is someone else's now: leave it alone.
			if err := p.m.alive(); err != nil {
				return 0, err
			}
			atomic.StoreUint64(&p.m.s.PendingLen, 0)
			continue
		}
		fp := t
		if pad != 0 {
			r.pad(p.q, t, t.seq(), pad)
			fp = mkpos(t.seq(), t.units()+uint32(pad>>unitShift))
		}
		p.run.at, p.run.fp, p.run.gap = t, fp, gap
		p.run.stale = atomic.LoadUint64(r.commitWord(p.q, off))
		// Each frame's header now (plain stores: the commit orders
		// them), so that commit writes nothing but commit words.
		first := fp // the first record: a reader that starts from the index passes no gap
		if gap != 0 {
			fh := r.frame(p.q, off)
			fh.Seq = fp.seq() + gap
			fh.Slot = SlotGap
			off += FrameHeaderLen
			first = mkpos(fp.seq()+gap, fp.units()+1)
		}
		r.index(p.q, t, first, next)
		p.run.off = p.run.off[:0]
		p.run.lens = append(p.run.lens[:0], sizes[:k]...)
		for i, n := range p.run.lens {
			fh := r.frame(p.q, off)
			fh.Seq = first.seq() + uint32(i)
			fh.Slot = uint16(p.m.idx)
			p.run.off = append(p.run.off, off)
			off += align16(FrameHeaderLen + uint64(n))
		}
		p.out = true
		return k, nil
	}
}

// roomHolding is room for a waiting publisher: one that holds the
// queue's reservation first sets it again if another Reserver cleared it
// (and woke it).
func (p *Publisher) roomHolding(end uint32) func() bool {
	return func() bool {
		if p.holding {
			p.reserve()
		}
		return p.room(end)
	}
}

// testHookClaiming, set only by tests, runs in claimRun after the claim
// is sized and before it is recorded and made: a test stalls there.
var testHookClaiming func()

// avail returns the units free for a claim at t without recomputing the
// limit: what Limit (pubsub) or Release (stream) leaves of one lap.
func (p *Publisher) avail(t pos) uint32 {
	v := &p.qh.Limit
	if p.r.cfg.Type == TypeStream {
		v = &p.qh.Release
	}
	d := udist(t.units(), uint32(atomic.LoadUint64(v)))
	if d > p.r.capUnits {
		return 0
	}
	return p.r.capUnits - d
}

// exclusive reports ErrEvicted unless this publisher still holds its slot
// and its queue exclusively.
func (p *Publisher) exclusive() error {
	if err := p.m.alive(); err != nil {
		return err
	}
	if atomic.LoadUint32(&p.qh.Exclusive) != p.m.idx+1 {
		p.m.dead.Store(true)
		return fmt.Errorf("%w: queue %d is no longer exclusive to slot %d", ErrEvicted, p.q, p.m.idx)
	}
	return nil
}

// owns reports whether the claim in flight is still this publisher's to
// write: the slot is still its own, and no claim of the next lap reached
// its first data frame (publishers do not pass a claim that is neither
// committed nor padded; the padding at the wrap before it, committed at
// once, they may).
func (p *Publisher) owns() (tail uint32, err error) {
	if err := p.m.alive(); err != nil {
		return 0, err
	}
	t := pos(atomic.LoadUint64(&p.qh.Tail)).units()
	if udist(t, p.run.fp.units()) > p.r.capUnits {
		p.m.dead.Store(true)
		return 0, fmt.Errorf("%w: claim at %d was lapped", ErrEvicted, p.run.fp.units())
	}
	return t, nil
}

// room reports whether a claim ending at units end fits: it may not reach
// into a lap-old claim still in flight (whatever the policy: its owner
// is still writing there), nor, with the block policy, past the slowest
// subscriber.
func (p *Publisher) room(end uint32) bool {
	r := p.r
	if r.cfg.Type == TypeStream {
		rel := pos(atomic.LoadUint64(&p.qh.Release))
		if udist(end, rel.units()) <= r.capUnits {
			return true
		}
		r.advanceRelease(p.q)
		r.reapTakes(p.q, monotonic())
		rel = pos(atomic.LoadUint64(&p.qh.Release))
		return udist(end, rel.units()) <= r.capUnits
	}
	if udist(end, uint32(atomic.LoadUint64(&p.qh.Limit))) <= r.capUnits {
		return true
	}
	if p.slow.blocks(r, p.q, end) {
		return false
	}
	limit, slot := r.raiseLimit(p.q)
	p.slow = slowest{}
	if slot >= 0 {
		p.slow = slowest{slot: uint32(slot) + 1, gen: atomic.LoadUint32(&r.slot(uint32(slot)).Gen)}
	}
	return udist(end, limit) <= r.capUnits
}

// testHookScan, set only by tests, runs at each scan of the member table
// for the limit.
var testHookScan func()

// blocks reports whether the slowest subscriber seen last is still the
// same live member of queue q and its cursor still leaves no room for a
// claim ending at end: then the limit does not either, whatever the other
// slots hold. Anything else (it moved on, left, expired, or the slot
// changed hands) calls for a scan.
func (sl slowest) blocks(r *Ring, q int, end uint32) bool {
	if sl.slot == 0 || sl.slot > r.cfg.MemberSlots {
		return false
	}
	s := r.slot(sl.slot - 1)
	if atomic.LoadUint32(&s.State) != MemberActive || atomic.LoadUint32(&s.Role) != RoleSubscriber|uint32(q)<<8 {
		return false
	}
	c := pos(atomic.LoadUint64(&s.Cursor)).units()
	if atomic.LoadUint32(&s.Gen) != sl.gen || r.expired(s, monotonic()) {
		return false
	}
	return udist(end, c) > r.capUnits && udist(pos(atomic.LoadUint64(&r.queues[q].Tail)).units(), c) <= r.capUnits
}

// raiseLimit recomputes the oldest position publishers of queue q must not
// lap, and stores it in Limit: the oldest claim of a live publisher still
// in flight and, with the block policy, the slowest live subscriber
// (evicting subscribers whose lease expired). With neither, the limit is
// the tail: nothing holds publishers back. A claim made after this scan
// starts at or after the tail it read, so a stored limit stays safe. It
// also returns the slot of the subscriber that holds the limit, -1 if none
// does (a claim, or nothing).
func (r *Ring) raiseLimit(q int) (uint32, int) {
	if testHookScan != nil {
		testHookScan()
	}
	qh := r.queues[q]
	tail := pos(atomic.LoadUint64(&qh.Tail)).units()
	now := monotonic()
	var lag uint32
	slowest := -1
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if atomic.LoadUint32(&s.State) != MemberActive {
			continue
		}
		role := atomic.LoadUint32(&s.Role)
		if role == RolePublisher|uint32(q)<<8 {
			// A claim holds others back until it is committed or padded:
			// a dead publisher's is padded here first (reapClaim), so that
			// no publisher of the next lap ever writes where its owner,
			// if it was only stalled, could still write.
			if atomic.LoadUint64(&s.PendingLen) == 0 || r.expired(s, now) && r.reapClaim(q, s, now) {
				continue
			}
			if d := udist(tail, pos(atomic.LoadUint64(&s.Pending)).units()); d <= r.capUnits && d > lag {
				lag, slowest = d, -1
			}
			continue
		}
		if role != RoleSubscriber|uint32(q)<<8 || r.cfg.Policy != PolicyBlock {
			continue
		}
		c := pos(atomic.LoadUint64(&s.Cursor))
		// A dead subscriber may not hold publishers back, once it is
		// evicted: a stalled one that comes back then finds out before it
		// trusts what it read (Valid).
		if r.expired(s, now) && r.evict(s, now) {
			continue
		}
		if d := udist(tail, c.units()); d <= r.capUnits && d > lag {
			lag, slowest = d, int(i)
		}
	}
	limit := tail - lag
	for {
		old := atomic.LoadUint64(&qh.Limit)
		if udist(limit, uint32(old)) > 1<<31 || uint32(old) == limit {
			return uint32(old), slowest // someone stored a newer limit
		}
		if atomic.CompareAndSwapUint64(&qh.Limit, old, uint64(limit)) {
			return limit, slowest
		}
	}
}

// Commit publishes a claimed frame: its commit word is stored last, with
// a compare-and-swap, and sleeping readers are woken. ErrEvicted means the
// message was not published: this publisher stalled past its lease and a
// reaper padded the claim (or the ring lapped it).
func (p *Publisher) Commit(c Claim) error {
	if !p.out || p.batch || c.p != p.run.fp {
		return fmt.Errorf("%w: commit without a matching claim", ErrConfig)
	}
	return p.commit()
}

// commit publishes the frames of the claim in flight. Their commit words
// are stored after everything else, the first frame's last: readers cannot
// pass an uncommitted frame, so no reader sees any message of a claim until
// it sees them all, and a reaper that pads over the claim of a dead
// publisher (from the first frame on) never hides a message a reader
// already took. The first frame's commit word is a CAS from the word the
// claim found there: if a reaper padded the claim meanwhile (this
// publisher stalled past its lease), it fails and nothing is published;
// the others, stored after the check that the claim was not lapped, lie
// under that padding. The CAS is also the full barrier that orders the
// commit before wake's look at DataWaiters (section 11 of the ABI).
func (p *Publisher) commit() error {
	p.out = false
	tail, err := p.owns()
	if err != nil {
		return err
	}
	r := p.r
	units := p.run.fp.units()
	fpOff := r.offset(units)
	word, i := commitWord(units, FlagPadding), 0 // a gap frame: padding of length 0
	if p.run.gap == 0 {
		word, i = commitWord(units, uint32(p.run.lens[0])), 1
	}
	for ; i < len(p.run.off); i++ {
		u := units + uint32((p.run.off[i]-fpOff)>>unitShift)
		storeRelease(r.commitWord(p.q, p.run.off[i]), commitWord(u, uint32(p.run.lens[i])))
	}
	if !atomic.CompareAndSwapUint64(r.commitWord(p.q, fpOff), p.run.stale, word) {
		p.m.dead.Store(true)
		return fmt.Errorf("%w: claim at %d was reaped", ErrEvicted, units)
	}
	p.m.clearPending()
	if r.cfg.Type == TypeStream {
		// Each record goes to one reader: wake one sleeper per record, not
		// the herd (a woken reader that leaves without one passes it on).
		wakeN(&p.qh.DataFutex, &p.qh.DataWaiters, len(p.run.lens))
	} else if p.quiet {
		wakeQuietly(&p.qh.DataFutex, &p.qh.DataWaiters)
	} else {
		wake(&p.qh.DataFutex, &p.qh.DataWaiters)
	}
	if udist(tail, p.run.at.units()) > r.capUnits-r.claimReach {
		// A claim this old may hold back a writer waiting for room
		// (raiseLimit): its record's clearing is progress to wake it for,
		// stored sequentially consistent before the look at the waiters.
		if p.m.alive() == nil {
			atomic.StoreUint64(&p.m.s.PendingLen, 0)
		}
		wake(&p.qh.SpaceFutex, &p.qh.SpaceWaiters)
	}
	p.m.counted(uint64(len(p.run.lens)))
	return nil
}

// WakeAll wakes every sleeping reader of the queue, those deaf to quiet
// publishers (SubscriberOptions.DeafToQuiet) too: a Quiet publisher calls
// it when they must look at what it wrote.
func (p *Publisher) WakeAll() { wake(&p.qh.DataFutex, &p.qh.DataWaiters) }

// abort turns an outstanding claim into padding, if it is still ours.
func (p *Publisher) abort() {
	p.out = false
	if _, err := p.owns(); err != nil {
		return
	}
	// The frames took sequence numbers, and a gap frame the messages it
	// stands for: the padding passes readers on to the sequence after
	// them (section 8 of the ABI), counting none as lost.
	p.r.padClaim(p.q, p.run.fp, p.run.end(p.r), p.run.stale)
	p.m.clearPending()
	wake(&p.qh.DataFutex, &p.qh.DataWaiters)
	wake(&p.qh.SpaceFutex, &p.qh.SpaceWaiters)
}

func commitWord(units, lenFlags uint32) uint64 { return uint64(lenFlags)<<32 | uint64(units) }

// pad commits padding frames over n bytes starting at position at, with
// next sequence seq (at's own, or one more when the padding stands in for
// a message that was claimed and never committed), splitting at the end of
// the ring.
func (r *Ring) pad(q int, at pos, seq uint32, n uint64) {
	for n > 0 {
		off := r.offset(at.units())
		k := min(n, r.capacity-off)
		p := mkpos(seq, at.units())
		cw := r.commitWord(q, off)
		r.padFrame(q, off, p, seq, atomic.LoadUint64(cw), k)
		at = mkpos(seq, at.units()+uint32(k>>unitShift))
		n -= k
	}
}

// padClaim commits one padding frame over [p, end) in place of the
// messages p.seq() up to end.seq() of a claim that will never be committed
// (abandoned, or its publisher died), unless the frame at p no longer
// holds stale. The padding's Seq is end's sequence, so readers go on there
// (section 5 of the ABI); one frame, whatever the claim held, so that
// padding costs one CAS and readers see all of the claim padded or none of
// it. A claim that reaches over the end of the ring (only a corrupt record
// can) is split there. It reports whether it padded.
func (r *Ring) padClaim(q int, p, end pos, stale uint64) bool {
	units := udist(end.units(), p.units())
	seq := end.seq()
	if k := seq - p.seq(); k == 0 || !r.spans(k, units) {
		seq = p.seq() + 1 // a claim of unknown count: at most one message per unit
	}
	n := uint64(units) << unitShift
	off := r.offset(p.units())
	first := min(n, r.capacity-off)
	if !r.padFrame(q, off, p, seq, stale, first) {
		return false // committed, or another reaper got here first
	}
	r.pad(q, mkpos(seq, p.units()+uint32(first>>unitShift)), seq, n-first)
	return true
}

// padFrame commits a padding frame of n bytes (header included) at off,
// for position p, with next sequence seq, unless the commit word no longer
// holds stale. The padder first makes the frame its own: a CAS of the
// commit word to padBusy(p), which the owner's commit (a CAS from the word
// it found at claim time) can no longer win and which no reader takes for
// a committed frame. Only then does it write Seq and Slot, and the padding's
// commit word last; so no reader ever sees the owner's commit word with the
// padder's sequence (section 10 of the ABI). A frame already busy is
// finished by whoever pads it next: a padder that died there would
// otherwise leave it blocked for good.
func (r *Ring) padFrame(q int, off uint64, p pos, seq uint32, stale, n uint64) bool {
	cw := r.commitWord(q, off)
	busy := padBusy(p)
	w := atomic.LoadUint64(cw)
	if w != stale && w != busy || !atomic.CompareAndSwapUint64(cw, w, busy) {
		return false // committed, or padded by another
	}
	fh := r.frame(q, off)
	atomic.StoreUint32(&fh.Seq, seq)
	fh.Slot = SlotPadding
	if testHookPadFrame != nil {
		testHookPadFrame()
	}
	return atomic.CompareAndSwapUint64(cw, busy, commitWord(p.units(), FlagPadding|uint32(n-FrameHeaderLen)))
}

// padBusy is the commit word of the frame at p while a padder owns it:
// p's tag complemented (no position at that offset has it, so readers
// find the frame claimed and wait, and the owner's commit CAS fails), with
// FlagPadding and FlagConsumed, which no committed word carries together.
func padBusy(p pos) uint64 { return commitWord(^p.units(), FlagPadding|FlagConsumed) }

// testHookPadFrame, set only by tests, runs in padFrame once the padder
// has decided to pad and before its padding is committed.
var testHookPadFrame func()

// index records, for every chunk boundary the claim [t, end) crosses, the
// first record at or after it: the data frame fp for boundaries inside the
// padding, the next claim for the others.
func (r *Ring) index(q int, t, fp, next pos) {
	cu := r.chunkUnits
	qh := r.queues[q]
	b := (t.units()>>r.chunkShift + 1) << r.chunkShift
	for udist(next.units(), b) < 1<<31 && udist(b, t.units()) <= udist(next.units(), t.units()) {
		e := next
		if udist(fp.units(), b) < 1<<31 {
			e = fp
		}
		storeRelease(&qh.Index[(b>>r.chunkShift)%IndexChunks], uint64(e))
		b += cu
	}
}
