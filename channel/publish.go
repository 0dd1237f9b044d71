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
}

// Publisher appends messages to one queue of a ring. Many publishers, in
// any processes, may write one queue at once: each claims its frame with a
// compare-and-swap on the tail, fills it, and commits it by storing the
// frame's commit word last. A Publisher is not safe for concurrent use by
// several goroutines; open one per goroutine.
type Publisher struct {
	r   *Ring
	q   int
	qh  *queueHeader
	m   *member
	w   waiter
	cl  Claim
	out bool // a claim is outstanding
	ex  bool // exclusive: Tail is ours to store
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
	p := &Publisher{r: r, q: o.Queue, qh: r.queues[o.Queue], m: m, ex: o.Exclusive}
	p.w = waiter{idle: o.Idle, lease: m}
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
func (p *Publisher) Close() error {
	if p.out {
		p.abort()
	}
	if p.ex {
		atomic.CompareAndSwapUint32(&p.qh.Exclusive, p.m.idx+1, 0)
	}
	p.m.release()
	return nil
}

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
	if p.out {
		return Claim{}, fmt.Errorf("%w: previous claim not committed", ErrConfig)
	}
	if n < 0 || uint64(n) > uint64(p.r.cfg.MaxMessage) {
		return Claim{}, fmt.Errorf("%w: %d bytes, maximum %d", ErrTooLarge, n, p.r.cfg.MaxMessage)
	}
	if err := p.m.alive(); err != nil {
		return Claim{}, err
	}
	r := p.r
	frame := align16(FrameHeaderLen + uint64(n))
	p.w.ctx = ctx
	p.w.reset()
	for {
		t := pos(atomic.LoadUint64(&p.qh.Tail))
		off := r.offset(t.units())
		total := frame
		if off+frame > r.capacity {
			total += r.capacity - off // padding to the end of the ring
		}
		end := t.units() + uint32(total>>unitShift)
		if !p.room(end) {
			if !block {
				return Claim{}, ErrWouldBlock
			}
			if err := p.w.pause(&p.qh.SpaceFutex, &p.qh.SpaceWaiters, func() bool { return p.room(end) }); err != nil {
				return Claim{}, err
			}
			continue
		}
		// Record the claim before making it, so that a reaper can unblock
		// it if this process dies before committing.
		storeRelease(&p.m.s.Pending, uint64(t))
		storeRelease(&p.m.s.PendingLen, total) // ordered before the claim by the CAS
		next := uint64(mkpos(t.seq()+1, end))
		if p.ex {
			storeRelease(&p.qh.Tail, next) // the only writer of Tail
		} else if !atomic.CompareAndSwapUint64(&p.qh.Tail, uint64(t), next) {
			// Withdraw the record: others must not wait on a claim that
			// was never made while this publisher waits for room.
			atomic.StoreUint64(&p.m.s.PendingLen, 0)
			continue
		}
		fp := t
		if total != frame {
			r.pad(p.q, t, t.seq(), total-frame)
			fp = mkpos(t.seq(), t.units()+uint32((total-frame)>>unitShift))
			off = 0
		}
		r.index(p.q, t, fp, mkpos(t.seq()+1, end))
		fo := r.data[p.q] + off
		p.cl = Claim{
			Buf: r.mem[fo+FrameHeaderLen : fo+FrameHeaderLen+uint64(n) : fo+FrameHeaderLen+uint64(n)],
			p:   fp,
			off: off,
			n:   n,
		}
		p.out = true
		return p.cl, nil
	}
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
	return udist(end, r.raiseLimit(p.q)) <= r.capUnits
}

// raiseLimit recomputes the oldest position publishers of queue q must not
// lap, and stores it in Limit: the oldest claim of a live publisher still
// in flight and, with the block policy, the slowest live subscriber
// (evicting subscribers whose lease expired). With neither, the limit is
// the tail: nothing holds publishers back. A claim made after this scan
// starts at or after the tail it read, so a stored limit stays safe.
func (r *Ring) raiseLimit(q int) uint32 {
	qh := r.queues[q]
	tail := pos(atomic.LoadUint64(&qh.Tail)).units()
	now := monotonic()
	var lag uint32
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if atomic.LoadUint32(&s.State) != MemberActive {
			continue
		}
		role := atomic.LoadUint32(&s.Role)
		if role == RolePublisher|uint32(q)<<8 {
			// A dead publisher's claim does not hold others back: readers
			// pad over it (unblockClaim) or the next lap overwrites it.
			if atomic.LoadUint64(&s.PendingLen) == 0 || r.expired(s, now) {
				continue
			}
			if d := udist(tail, pos(atomic.LoadUint64(&s.Pending)).units()); d <= r.capUnits && d > lag {
				lag = d
			}
			continue
		}
		if role != RoleSubscriber|uint32(q)<<8 || r.cfg.Policy != PolicyBlock {
			continue
		}
		c := pos(atomic.LoadUint64(&s.Cursor))
		if r.expired(s, now) {
			// A dead subscriber may not hold publishers back; if it is
			// parked on a dead publisher's claim, unblock that first.
			r.unblockClaim(q, c, now)
			r.evict(s, now)
			continue
		}
		if d := udist(tail, c.units()); d <= r.capUnits && d > lag {
			lag = d
		}
	}
	limit := tail - lag
	for {
		old := atomic.LoadUint64(&qh.Limit)
		if udist(limit, uint32(old)) > 1<<31 || uint32(old) == limit {
			return uint32(old) // someone stored a newer limit
		}
		if atomic.CompareAndSwapUint64(&qh.Limit, old, uint64(limit)) {
			return limit
		}
	}
}

// Commit publishes a claimed frame: the commit word is stored last, with
// release semantics, and sleeping readers are woken.
func (p *Publisher) Commit(c Claim) error {
	if !p.out || c.p != p.cl.p {
		return fmt.Errorf("%w: commit without a matching claim", ErrConfig)
	}
	p.out = false
	r := p.r
	fh := r.frame(p.q, c.off)
	fh.Seq = c.p.seq()
	fh.Slot = uint16(p.m.idx)
	word := commitWord(c.p.units(), uint32(c.n))
	// A plain release store, not a CAS: a CAS would wait for the line the
	// subscribers poll. A reaper pads a claim only after this publisher's
	// lease ran out; if we were that slow, our commit replaces its padding
	// with the same message either way, and we report the eviction.
	storeRelease(r.commitWord(p.q, c.off), word)
	storeRelease(&p.m.s.PendingLen, 0)
	ok := p.m.alive() == nil
	wake(&p.qh.DataFutex, &p.qh.DataWaiters)
	if !ok {
		// A reaper took this claim for a dead publisher's: we stalled
		// past our lease.
		p.m.dead.Store(true)
		return fmt.Errorf("%w: claim at %d was reaped", ErrEvicted, c.p.units())
	}
	p.m.counted()
	return nil
}

// abort turns an outstanding claim into padding.
func (p *Publisher) abort() {
	p.out = false
	c := p.cl
	// The claim took a sequence number: the padding passes readers on to the next one.
	p.r.padFrame(p.q, c.off, c.p, c.p.seq()+1, atomic.LoadUint64(p.r.commitWord(p.q, c.off)), align16(FrameHeaderLen+uint64(c.n)))
	atomic.StoreUint64(&p.m.s.PendingLen, 0)
	wake(&p.qh.DataFutex, &p.qh.DataWaiters)
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

// padFrame commits a padding frame of n bytes (header included) at off,
// for position p, with next sequence seq, unless the commit word no longer
// holds stale.
func (r *Ring) padFrame(q int, off uint64, p pos, seq uint32, stale, n uint64) bool {
	fh := r.frame(q, off)
	fh.Seq = seq
	fh.Slot = 0xffff
	return atomic.CompareAndSwapUint64(r.commitWord(q, off), stale, commitWord(p.units(), FlagPadding|uint32(n-FrameHeaderLen)))
}

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
