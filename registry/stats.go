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

// Stats returns a snapshot of the channel's counters.
func (ch *Channel) Stats() Stats {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	st := Stats{NS: ch.NS, Name: ch.Name, Broken: ch.broken.Load(), Lost: ch.lost.Load()}
	r := ch.ring
	if r == nil {
		return st
	}
	cfg := r.Config()
	st.Epoch = cfg.Epoch
	capUnits := uint32(cfg.Capacity >> 4)
	for q := 0; q < r.Queues(); q++ {
		qs := r.QueueStats(q)
		st.Messages += uint64(uint32(qs.Tail >> 32))
		st.Bytes += uint64(uint32(qs.Tail)-capUnits) << 4
		st.Reaped += qs.Reaped + qs.Evicted
		if cfg.Type == channel.TypeStream {
			// Stream readers share Head: the lag is what waits in each queue.
			lag := uint64(uint32(qs.Tail>>32) - uint32(qs.Head>>32))
			if lag > st.LagMax && lag < 1<<31 {
				st.LagMax = lag
			}
		}
	}
	for _, m := range r.Members() {
		if m.State != channel.MemberActive {
			continue
		}
		switch m.Role {
		case channel.RolePublisher:
			st.Publishers++
		case channel.RoleSubscriber:
			st.Subscribers++
			if cfg.Type == channel.TypePubSub && m.Lag > st.LagMax && m.Lag < 1<<31 {
				st.LagMax = m.Lag
			}
			st.Lost += m.Lost
		}
	}
	return st
}
