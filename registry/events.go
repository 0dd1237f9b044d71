package registry

import (
	"sync"

	"github.com/shimmy-dev/shimmy/channel"
)

// EventKind says what happened to a channel or a namespace.
type EventKind int

const (
	// Created: a channel was created (or recovered from the state
	// directory by Recover). Config is its configuration.
	Created EventKind = iota + 1
	// Reconfigured: the channel's ring was re-created; Epoch is the new
	// epoch and Config the new configuration.
	Reconfigured
	// Removed: the channel and its memory are gone.
	Removed
	// Broken: the ring failed validation; Reason says why. Its data is no
	// longer served.
	Broken
	// Overflow: the subscriber fell so far behind that Dropped events were
	// discarded; it must re-read the registry (Channels) to catch up.
	Overflow
	// NamespaceCreated: a namespace was created (or recovered by
	// Recover); Channel is "".
	NamespaceCreated
	// NamespaceRemoved: a namespace was removed; Channel is "".
	NamespaceRemoved
)

func (k EventKind) String() string {
	switch k {
	case Created:
		return "created"
	case Reconfigured:
		return "reconfigured"
	case Removed:
		return "removed"
	case Broken:
		return "broken"
	case Overflow:
		return "overflow"
	case NamespaceCreated:
		return "namespace created"
	case NamespaceRemoved:
		return "namespace removed"
	}
	return "unknown"
}

// Event is one change of a channel, or of a namespace (Channel "").
type Event struct {
	Seq       uint64 // registry-wide order, from 1; gaps only after an Overflow (whose Seq is 0)
	Kind      EventKind
	Namespace string
	Channel   string
	Epoch     uint64
	Config    channel.Config // Created, Reconfigured
	Reason    string         // Broken
	Dropped   uint64         // Overflow
}

// DefaultEventQueue is a subscriber's queue length unless Subscribe is told.
const DefaultEventQueue = 1024

// hub fans events out to subscribers. Each subscriber has its own bounded
// queue and its own goroutine that calls its function, so the registry
// only appends under a short lock and never waits for a subscriber.
type hub struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*subscriber]struct{}
}

type subscriber struct {
	fn  func(Event)
	max int

	mu      sync.Mutex
	queue   []Event
	dropped uint64
	wake    chan struct{} // 1-buffered: something was queued
	done    chan struct{} // closed by cancel
	exited  chan struct{} // closed when the goroutine returns
}

// Subscribe calls fn with every event from now on, in the order the
// registry made them (Seq increases), from one goroutine of its own: fn is
// never called concurrently with itself and never while a registry lock is
// held, so it may call the registry. A slow fn does not slow the registry:
// events wait in a queue of queue entries (<= 0: DefaultEventQueue); if
// that fills, the queued events are discarded and fn next receives one
// Overflow event counting them, after which it should re-list the
// channels. The returned cancel stops delivery and waits for a running fn
// to return (do not call it from fn).
func (r *Registry) Subscribe(queue int, fn func(Event)) (cancel func()) {
	if queue <= 0 {
		queue = DefaultEventQueue
	}
	s := &subscriber{fn: fn, max: queue, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	r.events.mu.Lock()
	if r.events.subs == nil {
		r.events.subs = map[*subscriber]struct{}{}
	}
	r.events.subs[s] = struct{}{}
	r.events.mu.Unlock()
	go s.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.events.mu.Lock()
			delete(r.events.subs, s)
			r.events.mu.Unlock()
			close(s.done)
			<-s.exited
		})
	}
}

// emit stamps e and queues it for every subscriber. Callers hold the lock
// of the state e describes, so that events of one channel are stamped in
// the order its changes happened.
func (h *hub) emit(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	e.Seq = h.seq
	for s := range h.subs {
		s.push(e)
	}
}

func (s *subscriber) push(e Event) {
	s.mu.Lock()
	if len(s.queue) >= s.max {
		for _, q := range s.queue {
			if q.Kind != Overflow {
				s.dropped++
			}
		}
		s.queue = append(s.queue[:0], Event{Kind: Overflow})
	}
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) run() {
	defer close(s.exited)
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			if len(s.queue) == 0 {
				s.mu.Unlock()
				break
			}
			e := s.queue[0]
			s.queue = s.queue[1:]
			if e.Kind == Overflow {
				e.Dropped, s.dropped = s.dropped, 0
			}
			s.mu.Unlock()
			select {
			case <-s.done:
				return
			default:
			}
			s.fn(e)
		}
	}
}
