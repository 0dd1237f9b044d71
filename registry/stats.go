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

// Stats returns a snapshot of the channel's counters. It reads the ring
// outside the channel's lock, so it never waits for a reap or a change.
func (ch *Channel) Stats() Stats {
	st := Stats{NS: ch.NS, Name: ch.Name, Broken: ch.broken.Load(), Lost: ch.lost.Load()}
	if st.Broken {
		return st
	}
	m := ch.borrow()
	if m == nil {
		return st
	}
	defer m.release()
	var rs channel.Stats
	if err := guard(func() error { rs = m.ring.Stats(); return nil }); err != nil {
		ch.MarkBroken(err)
		st.Broken = true
		return st
	}
	st.Epoch = m.ring.Epoch()
	st.Messages, st.Bytes, st.Publishers, st.Subscribers = rs.Messages, rs.Bytes, rs.Publishers, rs.Subscribers
	st.LagMax, st.Reaped = rs.LagMax, rs.Reaped
	st.Lost += rs.Lost
	return st
}
