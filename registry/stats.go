package registry

import "github.com/shimmy-dev/shimmy/channel"

// Stats is a snapshot of a channel's counters, the same for every front
// end (stats file, metrics, Kubernetes status).
type Stats struct {
	NS, Name    string
	Messages    uint64 // messages published since the ring was formatted (all queues)
	Bytes       uint64 // ring bytes consumed by frames (headers and padding included)
	Publishers  uint64
	Subscribers uint64
	LagMax      uint64 // slowest subscriber's lag in messages
	Lost        uint64 // messages lost to overwrite (live subscribers + closed Subscribers of Handles)
	Reaped      uint64 // dead members evicted and claims unblocked
	Epoch       uint64
	Broken      bool
}

// Stats returns a snapshot of the channel's counters. It takes the
// channel's lock only to borrow the ring, so it never waits for a reap.
func (ch *Channel) Stats() Stats {
	st, _ := ch.stats(ch.borrow)
	return st
}

// StatsNoWait is Stats for a collector that must not wait at all: while
// the channel's lock is held (a ring being made for a change) it returns
// the last snapshot taken instead.
func (ch *Channel) StatsNoWait() Stats {
	if st, ok := ch.stats(ch.tryBorrow); ok {
		return st
	}
	if last := ch.lastStats.Load(); last != nil {
		return *last
	}
	return Stats{NS: ch.NS, Name: ch.Name, Broken: ch.broken.Load(), Lost: ch.lost.Load()}
}

// stats reads the counters from the mapping borrow gives; false if borrow
// would have waited.
func (ch *Channel) stats(borrow func() (*mapping, bool)) (Stats, bool) {
	st := Stats{NS: ch.NS, Name: ch.Name, Broken: ch.broken.Load(), Lost: ch.lost.Load()}
	if st.Broken {
		return st, true
	}
	m, ok := borrow()
	if m == nil {
		return st, ok
	}
	defer m.release()
	var rs channel.Stats
	if err := guard(func() error { rs = m.ring.Stats(); return nil }); err != nil {
		ch.MarkBroken(err)
		st.Broken = true
		return st, true
	}
	st.Epoch = m.ring.Epoch()
	st.Messages, st.Bytes, st.Publishers, st.Subscribers = rs.Messages, rs.Bytes, rs.Publishers, rs.Subscribers
	st.LagMax, st.Reaped = rs.LagMax, rs.Reaped
	st.Lost += rs.Lost
	ch.lastStats.Store(&st)
	return st, true
}
