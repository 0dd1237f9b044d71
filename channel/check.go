package channel

import (
	"fmt"
	"sync/atomic"
)

// Check verifies the invariants a healthy ring keeps in shared memory: the
// descriptor still matches what Open validated, the queue counters are
// ordered and within one lap of each other, and every member slot has a
// known state and role. The agent runs it before trusting a ring it did
// not write alone; an error wraps ErrCorrupt and names the field.
func (r *Ring) Check() error {
	d := r.desc()
	want := []struct {
		name      string
		got, want uint64
	}{
		{"magic", atomic.LoadUint64(&d.Magic), Magic},
		{"version", uint64(atomic.LoadUint32(&d.Version)), uint64(r.version)},
		{"header length", uint64(atomic.LoadUint32(&d.HeaderLen)), HeaderLen},
		{"type", uint64(atomic.LoadUint32((*uint32)(&d.Type))), uint64(r.cfg.Type)},
		{"policy", uint64(atomic.LoadUint32((*uint32)(&d.Policy))), uint64(r.cfg.Policy)},
		{"capacity", atomic.LoadUint64(&d.Capacity), r.cfg.Capacity},
		{"max message", uint64(atomic.LoadUint32(&d.MaxMessage)), uint64(r.cfg.MaxMessage)},
		{"member slots", uint64(atomic.LoadUint32(&d.MemberSlots)), uint64(r.cfg.MemberSlots)},
		{"epoch", atomic.LoadUint64(&d.Epoch), r.cfg.Epoch},
		{"lease", atomic.LoadUint64(&d.LeaseNanos), uint64(r.cfg.Lease)},
		{"file size", atomic.LoadUint64(&d.FileSize), uint64(len(r.mem))},
		{"data offset", atomic.LoadUint64(&d.DataOffset), r.data[0]},
	}
	for _, f := range want {
		if f.got != f.want {
			return fmt.Errorf("%w: header %s is %#x, was %#x", ErrCorrupt, f.name, f.got, f.want)
		}
	}
	for q := 0; q < r.Queues(); q++ {
		qh := r.queues[q]
		// Read the slower counters first: each later read can only be
		// further ahead, so a healthy ring never fails these checks.
		rel := pos(atomic.LoadUint64(&qh.Release))
		head := pos(atomic.LoadUint64(&qh.Head))
		limit := uint32(atomic.LoadUint64(&qh.Limit))
		tail := pos(atomic.LoadUint64(&qh.Tail))
		if r.cfg.Type == TypePubSub && udist(tail.units(), limit) > r.capUnits {
			return fmt.Errorf("%w: queue %d limit %d is more than a lap behind tail %d", ErrCorrupt, q, limit, tail.units())
		}
		if x := atomic.LoadUint32(&qh.Exclusive); x > r.cfg.MemberSlots {
			return fmt.Errorf("%w: queue %d exclusive publisher slot %d of %d", ErrCorrupt, q, x-1, r.cfg.MemberSlots)
		}
		if r.cfg.Type != TypeStream {
			continue
		}
		if udist(tail.units(), rel.units()) > r.capUnits || udist(tail.units(), head.units()) > udist(tail.units(), rel.units()) {
			return fmt.Errorf("%w: queue %d positions out of order: release %d, head %d, tail %d", ErrCorrupt, q, rel.units(), head.units(), tail.units())
		}
		if udist(tail.seq(), head.seq()) > udist(tail.units(), head.units()) {
			return fmt.Errorf("%w: queue %d has %d messages in %d units", ErrCorrupt, q, udist(tail.seq(), head.seq()), udist(tail.units(), head.units()))
		}
	}
	for i := uint32(0); i < r.cfg.MemberSlots; i++ {
		s := r.slot(i)
		st := atomic.LoadUint32(&s.State)
		if st > MemberDead {
			return fmt.Errorf("%w: member slot %d has state %d", ErrCorrupt, i, st)
		}
		if st != MemberActive {
			continue
		}
		role := atomic.LoadUint32(&s.Role)
		if r0 := role & 0xff; (r0 != RolePublisher && r0 != RoleSubscriber) || uint64(role>>8) >= r.cfg.queues() {
			return fmt.Errorf("%w: member slot %d has role %#x", ErrCorrupt, i, role)
		}
	}
	return nil
}
