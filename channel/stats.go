package channel

import "sync/atomic"

// QueueStats is a snapshot of one queue's shared counters, as read from
// memory (a client may have written anything there: see Check), and what
// they mean. The counters are read one at a time, so on a busy ring they
// may disagree by the messages published meanwhile.
type QueueStats struct {
	Tail    Position // next claim
	Head    Position // next record a stream reader takes
	Release Position // stream: records before it are consumed
	Limit   uint32   // pubsub: units of the slowest live subscriber (publishers stay within a lap of it)

	Reaped  uint64 // claims and takes of dead members that were unblocked
	Evicted uint64 // members evicted after their lease expired

	DataWaiters  uint32 // readers asleep waiting for messages
	SpaceWaiters uint32 // writers asleep waiting for room

	Messages uint64 // messages published since the ring was formatted (modulo 2^32), and those gap frames stand for
	Bytes    uint64 // bytes of the data stream published since then: frames, headers and padding (modulo 64 GiB)
	Waiting  uint64 // stream: messages published and not yet taken
	InUse    uint64 // bytes publishers may not overwrite yet: from Limit (pubsub) or Release (stream) to Tail
}

// Queues returns how many queues the ring has: 1 (pubsub) or 2 (stream).
func (r *Ring) Queues() int { return int(r.cfg.queues()) }

// start is the position of a freshly formatted queue: one lap in, so that
// zeroed memory never carries the tag of a first-lap position.
func (r *Ring) start() Position { return mkpos(0, r.capUnits) }

// QueueStats reads queue q's counters; q out of range gives a zero value.
func (r *Ring) QueueStats(q int) QueueStats {
	if q < 0 || q >= r.Queues() {
		return QueueStats{}
	}
	qh := r.queues[q]
	s := QueueStats{
		Tail: Position(atomic.LoadUint64(&qh.Tail)), Head: Position(atomic.LoadUint64(&qh.Head)),
		Release: Position(atomic.LoadUint64(&qh.Release)), Limit: uint32(atomic.LoadUint64(&qh.Limit)),
		Reaped: atomic.LoadUint64(&qh.Reaped), Evicted: atomic.LoadUint64(&qh.Evicted),
		DataWaiters: atomic.LoadUint32(&qh.DataWaiters), SpaceWaiters: atomic.LoadUint32(&qh.SpaceWaiters),
	}
	s.Messages = uint64(s.Tail.MessagesSince(r.start()))
	s.Bytes = s.Tail.BytesSince(r.start())
	if r.cfg.Type == TypeStream {
		s.Waiting = uint64(s.Tail.MessagesSince(s.Head))
		s.InUse = s.Tail.BytesSince(s.Release)
	} else {
		s.InUse = s.Tail.BytesSince(mkpos(0, s.Limit))
	}
	return s
}

// Stats sums a ring's queues and live members: what the agent's stats file
// and metrics show of a channel.
type Stats struct {
	Messages    uint64 // messages published since the ring was formatted, all queues
	Bytes       uint64 // data stream bytes published (headers and padding included), all queues
	Publishers  uint64 // live publishers
	Subscribers uint64 // live subscribers (pubsub) or readers (stream)
	LagMax      uint64 // slowest pubsub subscriber's lag, or most messages waiting in a stream queue
	Lost        uint64 // messages live subscribers lost to overwrite
	Reaped      uint64 // claims and takes of dead members unblocked, plus members evicted
}

// lagSane bounds lags read from shared memory: a cursor ahead of the tail
// (a client wrote nonsense, or the tail moved between the two reads) gives
// a lag near 2^32, which is not reported.
const lagSane = 1 << 31

// Stats reads the ring's counters and member table once.
func (r *Ring) Stats() Stats {
	var st Stats
	for q := 0; q < r.Queues(); q++ {
		qs := r.QueueStats(q)
		st.Messages += qs.Messages
		st.Bytes += qs.Bytes
		st.Reaped += qs.Reaped + qs.Evicted
		// Stream readers share Head: the lag is what waits in each queue.
		if r.cfg.Type == TypeStream && qs.Waiting > st.LagMax && qs.Waiting < lagSane {
			st.LagMax = qs.Waiting
		}
	}
	for _, m := range r.Members() {
		if m.State != MemberActive {
			continue
		}
		switch m.Role {
		case RolePublisher:
			st.Publishers++
		case RoleSubscriber:
			st.Subscribers++
			if r.cfg.Type == TypePubSub && m.Lag > st.LagMax && m.Lag < lagSane {
				st.LagMax = m.Lag
			}
			st.Lost += m.Lost
		}
	}
	return st
}
