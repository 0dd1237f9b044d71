package channel

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"
)

// member is one slot of the member table owned by this process.
type member struct {
	r     *Ring
	idx   uint32
	gen   uint32
	s     *memberSlot
	dead  atomic.Bool
	close atomic.Bool
	count uint64 // messages, owned by the member's goroutine
	lease uint64 // the Lease last stored; under r.mu once tracked
}

// counted adds n messages to the member's count. The shared Count is an
// observer's figure: it is stored at the first message and then whenever
// the count crosses a multiple of 256, which keeps a locked write off the
// per-message path.
func (m *member) counted(n uint64) {
	old := m.count
	m.count += n
	if old == 0 || old>>8 != m.count>>8 {
		atomic.StoreUint64(&m.s.Count, m.count)
	}
}

// acquire takes a free slot for role on queue q. cursor is stored before
// the slot turns active, so no one ever sees a live slot with a stale cursor.
func (r *Ring) acquire(role uint32, q int, cursor pos) (*member, error) {
	now := uint64(monotonic())
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		if atomic.LoadUint32(&s.State) != MemberFree || !atomic.CompareAndSwapUint32(&s.State, MemberFree, MemberInit) {
			continue
		}
		gen := atomic.AddUint32(&s.Gen, 1)
		atomic.StoreUint64(&s.Lease, now) // over a reaper's stamp (stampStuck)
		atomic.StoreUint32(&s.Role, role|uint32(q)<<8)
		atomic.StoreUint32(&s.Pid, uint32(os.Getpid()))
		atomic.StoreUint64(&s.Cursor, uint64(cursor))
		atomic.StoreUint64(&s.PendingLen, 0)
		atomic.StoreUint64(&s.Pending, 0)
		atomic.StoreUint64(&s.Lost, 0)
		atomic.StoreUint64(&s.Count, 0)
		// A CAS: a reaper frees an init slot whose joiner looks dead
		// (stampStuck), and the slot may have changed hands since.
		if !atomic.CompareAndSwapUint32(&s.State, MemberInit, MemberActive) || atomic.LoadUint32(&s.Gen) != gen {
			continue
		}
		// A reservation naming the slot is its former owner's: void
		// (section 9 of the ABI).
		if uint64(q) < r.cfg.queues() {
			atomic.CompareAndSwapUint32(&r.queues[q].Reserve, i+1, 0)
		}
		m := &member{r: r, idx: i, gen: gen, s: s, lease: now}
		r.track(m)
		return m, nil
	}
	return nil, fmt.Errorf("%w: all %d slots in use", ErrNoSlot, r.cfg.MemberSlots)
}

// alive reports ErrEvicted if someone reaped this member, ErrClosed after Close.
func (m *member) alive() error {
	if m.close.Load() {
		return ErrClosed
	}
	if m.dead.Load() {
		return ErrEvicted
	}
	if atomic.LoadUint32(&m.s.State) != MemberActive || atomic.LoadUint32(&m.s.Gen) != m.gen {
		m.dead.Store(true)
		return ErrEvicted
	}
	return nil
}

// clearPending clears the claim or take record, if the slot is still ours.
func (m *member) clearPending() {
	if m.alive() == nil {
		storeRelease(&m.s.PendingLen, 0)
	}
}

// heartbeat refreshes the lease to now with a CAS from the value this
// member stored last: a reaper that evicted it (Lease 0) or a new owner of
// the slot (its own Lease) makes the CAS fail, and this member stops.
func (m *member) heartbeat(now uint64) {
	if m.alive() != nil {
		return
	}
	if !atomic.CompareAndSwapUint64(&m.s.Lease, m.lease, now) {
		m.dead.Store(true)
		return
	}
	m.lease = now
}

// release frees the slot if this member still owns it: the Lease CAS from
// its own last value fails once a reaper or a new owner wrote it.
func (m *member) release() {
	if !m.close.CompareAndSwap(false, true) {
		return
	}
	m.r.untrack(m)
	if atomic.LoadUint32(&m.s.Gen) != m.gen || !atomic.CompareAndSwapUint64(&m.s.Lease, m.lease, 0) {
		return
	}
	atomic.CompareAndSwapUint32(&m.s.State, MemberActive, MemberFree)
}

// track registers m for the ring's heartbeat goroutine.
func (r *Ring) track(m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.local[m.idx] = m
	if r.beat == nil {
		r.beat = make(chan struct{})
		go r.heartbeats(r.beat)
	}
}

// untrack takes m off the heartbeat list. Only m: an evicted member's
// slot may have gone to a new member of this process since, whose entry
// it is now.
func (r *Ring) untrack(m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.local[m.idx] == m {
		delete(r.local, m.idx)
	}
	if len(r.local) == 0 && r.beat != nil {
		close(r.beat)
		r.beat = nil
	}
}

// heartbeats refreshes the leases of this process's members four times a
// lease, so that a live but busy member is never taken for dead. A pass
// reads the clock once and costs one CAS per member (a few thousand take
// well under a millisecond), so it keeps up with every member a ring can
// hold; what made it fall behind was a process's sleepers starving it of
// the processor, which parks prevent.
func (r *Ring) heartbeats(stop chan struct{}) {
	t := time.NewTicker(r.cfg.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		now := uint64(monotonic())
		faultSafe(func() { // a shrunk ring: its members die with it
			for _, m := range r.local {
				m.heartbeat(now)
			}
		})
		r.mu.Unlock()
	}
}

// expired reports whether slot s is a member whose lease ran out at now.
func (r *Ring) expired(s *memberSlot, now int64) bool {
	st := atomic.LoadUint32(&s.State)
	if st != MemberActive && st != MemberInit {
		return false
	}
	return r.leaseOut(atomic.LoadUint64(&s.Lease), now)
}

// leaseOut reports whether a lease stored at lease has run out at now. A
// lease more than one lease in the future was never stored by a live
// member (every party reads the same CLOCK_MONOTONIC): it has run out
// too, or a dead member could keep its slot forever. 0 is no lease.
func (r *Ring) leaseOut(lease uint64, now int64) bool {
	d := now - int64(lease)
	return lease != 0 && (d > int64(r.cfg.Lease) || d < -int64(r.cfg.Lease))
}

// evict marks slot s dead and frees it, if its lease is still expired and
// the slot was not handed to a new member meanwhile.
func (r *Ring) evict(s *memberSlot, now int64) bool {
	gen := atomic.LoadUint32(&s.Gen)
	st := atomic.LoadUint32(&s.State)
	lease := atomic.LoadUint64(&s.Lease)
	if st != MemberActive && st != MemberInit || !r.leaseOut(lease, now) {
		return false
	}
	// The Lease CAS fails if the member woke up or the slot changed hands
	// since we looked (a new owner stores its own Lease first); the Gen
	// check after the State CAS catches one that changed hands in between.
	if !atomic.CompareAndSwapUint64(&s.Lease, lease, 0) || !atomic.CompareAndSwapUint32(&s.State, st, MemberDead) {
		return false
	}
	if atomic.LoadUint32(&s.Gen) != gen {
		atomic.CompareAndSwapUint32(&s.State, MemberDead, st)
		return false
	}
	if q := atomic.LoadUint32(&s.Role) >> 8 & 0xff; uint64(q) < r.cfg.queues() {
		atomic.AddUint64(&r.queues[q].Evicted, 1)
		// A dead exclusive publisher gives the queue back, and a dead
		// Reserver its reservation (the wake-up below tells the waiters).
		atomic.CompareAndSwapUint32(&r.queues[q].Exclusive, r.slotIndex(s)+1, 0)
		atomic.CompareAndSwapUint32(&r.queues[q].Reserve, r.slotIndex(s)+1, 0)
	}
	atomic.StoreUint64(&s.PendingLen, 0)
	atomic.CompareAndSwapUint32(&s.State, MemberDead, MemberFree)
	if q := atomic.LoadUint32(&s.Role) >> 8 & 0xff; uint64(q) < r.cfg.queues() {
		// Writers it held back wait no longer than the eviction, and a
		// waiter of its own process notices it now.
		wake(&r.queues[q].SpaceFutex, &r.queues[q].SpaceWaiters)
		wake(&r.queues[q].DataFutex, &r.queues[q].DataWaiters)
	}
	return true
}

// stampStuck gives a lease to a slot that has none and would otherwise
// never expire: one a joiner took (State init) and died before its first
// Lease store, or one a reaper died evicting (State dead). It frees a dead
// one whose stamp ran out; an init one expires like any member.
func (r *Ring) stampStuck(s *memberSlot, now int64) {
	st := atomic.LoadUint32(&s.State)
	if st != MemberInit && st != MemberDead {
		return
	}
	lease := atomic.LoadUint64(&s.Lease)
	switch {
	case lease == 0:
		atomic.CompareAndSwapUint64(&s.Lease, 0, uint64(now))
	case st == MemberDead && r.leaseOut(lease, now) && atomic.CompareAndSwapUint64(&s.Lease, lease, 0):
		atomic.StoreUint64(&s.PendingLen, 0)
		atomic.CompareAndSwapUint32(&s.State, MemberDead, MemberFree)
	}
}

// slotIndex returns the index of slot s in the member table.
func (r *Ring) slotIndex(s *memberSlot) uint32 {
	return uint32((uintptr(unsafe.Pointer(s)) - uintptr(unsafe.Pointer(&r.mem[r.members]))) / MemberSlotLen)
}

// MemberInfo is a snapshot of one member slot, for inspection tools and
// the agent. Values come from shared memory and are reported as read.
type MemberInfo struct {
	Slot       uint32
	State      uint32
	Role       uint32
	Queue      uint32
	Pid        uint32
	LeaseAge   time.Duration
	Cursor     uint64 // packed position
	Lag        uint64 // messages between the cursor and the tail (subscribers)
	Pending    uint64
	PendingLen uint64 // bytes of the claim or take in flight; 0: none
	Gen        uint32
	Lost       uint64
	Count      uint64
}

// Members returns the non-free member slots.
func (r *Ring) Members() []MemberInfo {
	now := monotonic()
	var out []MemberInfo
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		st := atomic.LoadUint32(&s.State)
		if st == MemberFree {
			continue
		}
		role := atomic.LoadUint32(&s.Role)
		mi := MemberInfo{
			Slot: i, State: st, Role: role & 0xff, Queue: (role >> 8) & 0xff,
			Pid:        atomic.LoadUint32(&s.Pid),
			Cursor:     atomic.LoadUint64(&s.Cursor),
			Pending:    atomic.LoadUint64(&s.Pending),
			PendingLen: atomic.LoadUint64(&s.PendingLen),
			Gen:        atomic.LoadUint32(&s.Gen),
			Lost:       atomic.LoadUint64(&s.Lost),
			Count:      atomic.LoadUint64(&s.Count),
		}
		if l := atomic.LoadUint64(&s.Lease); l != 0 {
			mi.LeaseAge = time.Duration(now - int64(l))
		}
		if mi.Role == RoleSubscriber && mi.Queue < uint32(r.cfg.queues()) {
			tail := pos(atomic.LoadUint64(&r.queues[mi.Queue].Tail))
			mi.Lag = uint64(tail.seq() - pos(mi.Cursor).seq())
		}
		out = append(out, mi)
	}
	return out
}

// Reap evicts every member whose lease has expired and unblocks records
// that dead publishers claimed and never committed. Any member may call
// it; the agent calls it periodically. It returns how many members were
// evicted. Its work is one pass over the member table (two on a stream),
// and one padding frame per dead claim: whatever the slots hold, a pass
// is bounded by the number of slots.
func (r *Ring) Reap() int {
	now := monotonic()
	for q := 0; q < int(r.cfg.queues()); q++ {
		if r.cfg.Type == TypeStream {
			r.reapTakes(q, now)
		}
		// A reservation that names no live publisher (garbage, or a
		// member that left without clearing it) is cleared.
		if v := atomic.LoadUint32(&r.queues[q].Reserve); v != 0 {
			r.holds(q, v)
		}
	}
	n := 0
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		r.stampStuck(s, now)
		if !r.expired(s, now) {
			continue
		}
		// A dead publisher's claim is padded from its first data frame,
		// wherever readers are (there may be none at all), so that its
		// slot, and the queue if it held it exclusively, are freed.
		if role := atomic.LoadUint32(&s.Role); role&0xff == RolePublisher && uint64(role>>8&0xff) < r.cfg.queues() && atomic.LoadUint64(&s.PendingLen) != 0 {
			r.reapClaim(int(role>>8&0xff), s, now)
		}
		if r.settled(s) && r.evict(s, now) {
			n++
		}
	}
	return n
}

// claimData returns the position of the first data frame of the claim
// recorded in publisher slot s: Pending, or just past the padding when
// the claim starts with padding to the end of the ring (its frames never
// straddle the end, so a claim that does is one).
func (r *Ring) claimData(s *memberSlot) pos {
	p := pos(atomic.LoadUint64(&s.Pending))
	off := r.offset(p.units())
	if n := atomic.LoadUint64(&s.PendingLen); n <= r.capacity && off+n > r.capacity {
		p = mkpos(p.seq(), p.units()+uint32((r.capacity-off)>>unitShift))
	}
	return p
}

// settled reports whether slot s holds no claim or take that still blocks
// others: then evicting it loses nothing.
func (r *Ring) settled(s *memberSlot) bool {
	if atomic.LoadUint64(&s.PendingLen) == 0 {
		return true
	}
	role := atomic.LoadUint32(&s.Role)
	q := int(role >> 8 & 0xff)
	if q >= int(r.cfg.queues()) {
		return true
	}
	p := pos(atomic.LoadUint64(&s.Pending))
	if role&0xff == RolePublisher {
		// The claim is committed when its first data frame is: a claim
		// that starts with padding at the wrap committed the padding at
		// once (the next lap may reuse it), and a claim of several frames
		// commits the first one last.
		p = r.claimData(s)
	}
	if udist(pos(atomic.LoadUint64(&r.queues[q].Tail)).units(), p.units()) > r.capUnits {
		return true // lapped long ago
	}
	if role&0xff == RolePublisher {
		return r.tagged(q, p)
	}
	w := atomic.LoadUint64(r.commitWord(q, r.offset(p.units())))
	return uint32(w) == p.units() && uint32(w>>32)&(FlagConsumed|FlagPadding) != 0
}

// leaving runs a member's Close, f, unless the ring was closed: the
// ring's Close waits for one in flight before it unmaps the memory.
func (r *Ring) leaving(f func()) {
	r.closing.RLock()
	defer r.closing.RUnlock()
	if !r.closed {
		f()
	}
}

// Close releases every member this process holds on the ring and stops
// their heartbeats; a ring from MapFile is unmapped too. Call it before
// unmapping memory of your own. A member's Close that runs at the same
// time finishes first; one after it does nothing.
func (r *Ring) Close() error {
	r.closing.Lock()
	r.closed = true
	r.closing.Unlock()
	r.mu.Lock()
	ms := make([]*member, 0, len(r.local))
	for _, m := range r.local {
		ms = append(ms, m)
	}
	r.mu.Unlock()
	for _, m := range ms {
		m.release()
	}
	for q := uint64(0); q < r.cfg.queues(); q++ {
		r.parks[q][0].close()
		r.parks[q][1].close()
	}
	r.mu.Lock()
	unmap := r.unmap
	r.unmap = nil
	r.mu.Unlock()
	if unmap != nil {
		return unmap()
	}
	return nil
}
