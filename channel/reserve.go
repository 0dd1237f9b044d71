package channel

import (
	"fmt"
	"sync/atomic"
)

// The queue header's Reserve word (sections 3 and 9 of the ABI) lets one
// publisher of a block pubsub queue, the mirror's importer, have the room
// that subscribers free: while it names a live publisher of the queue,
// every other publisher finds the ring full. Two hosts that share a block
// channel both ways need it: each host's ring is held by the other's
// acknowledgements, and the importers, which free the other host's ring
// by taking its messages, must not lose that room to local publishers or
// both hosts wait for each other for good.
//
// The word is tenant writable, so it is loaded once and trusted only
// while it names a live publisher slot of its queue; anything else is
// void and cleared by whoever finds it. A tenant that names a live
// publisher holds up its own channel's publishers, as a subscriber that
// never reads does.

// holds reports whether v, a Reserve word of queue q loaded once and not
// 0, names a live (active, unexpired) publisher of q. A void word is
// cleared, and the writers asleep on it woken.
func (r *Ring) holds(q int, v uint32) bool {
	if v-1 < r.cfg.MemberSlots {
		s := r.slot(v - 1)
		if atomic.LoadUint32(&s.State) == MemberActive && atomic.LoadUint32(&s.Role) == RolePublisher|uint32(q)<<8 && !r.expired(s, monotonic()) {
			return true
		}
	}
	r.unreserve(q, v)
	return false
}

// unreserve clears queue q's Reserve word if it still holds v, and wakes
// the writers waiting for it.
func (r *Ring) unreserve(q int, v uint32) {
	qh := r.queues[q]
	if atomic.CompareAndSwapUint32(&qh.Reserve, v, 0) {
		wake(&qh.SpaceFutex, &qh.SpaceWaiters)
	}
}

// ClearReservations clears every queue's Reserve word: the agent does at
// recovery, when no importer of its own holds one yet.
func (r *Ring) ClearReservations() {
	for q := range r.Queues() {
		if v := atomic.LoadUint32(&r.queues[q].Reserve); v != 0 {
			r.unreserve(q, v)
		}
	}
}

// Reserved returns the member slot that the Reserve word of queue q names
// as it is, valid or not; false when it is 0.
func (r *Ring) Reserved(q int) (uint32, bool) {
	v := atomic.LoadUint32(&r.queues[q].Reserve)
	return v - 1, v != 0
}

// reserved reports whether another publisher's reservation holds this
// publisher back.
func (p *Publisher) reserved() bool {
	v := atomic.LoadUint32(&p.qh.Reserve)
	return v != 0 && p.r.holds(p.q, v)
}

// Reserve, for a publisher joined with PublisherOptions.Reserver, reserves
// the room of its block pubsub queue (true) or gives it up (false),
// waking the publishers that wait for it. While it is reserved, every
// publisher of the queue but the Reserver ones finds the ring full; with
// several Reserver publishers holding it at once, the word names one of
// them and each claim of the others sets it again once it is clear.
// Close gives it up too. On any other queue it does nothing.
func (p *Publisher) Reserve(on bool) error {
	if !p.reserver {
		return fmt.Errorf("%w: Reserve needs PublisherOptions.Reserver", ErrConfig)
	}
	if p.r.cfg.Type != TypePubSub || p.r.cfg.Policy != PolicyBlock {
		return nil
	}
	if err := p.m.alive(); err != nil {
		return err
	}
	p.holding = on
	if on {
		p.reserve()
	} else {
		p.r.unreserve(p.q, p.m.idx+1)
	}
	return nil
}

// reserve sets the Reserve word to this publisher's slot unless it names
// a live publisher already (this one, or another Reserver).
func (p *Publisher) reserve() {
	own := p.m.idx + 1
	if v := atomic.LoadUint32(&p.qh.Reserve); v == own || v != 0 && p.r.holds(p.q, v) {
		return
	}
	atomic.CompareAndSwapUint32(&p.qh.Reserve, 0, own)
}
