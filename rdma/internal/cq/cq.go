// Package cq is the completion queue both rdma backends hand to their
// users: a bounded FIFO of completions, polled without waiting or waited
// on with a context, that closes with the link.
package cq

import (
	"context"
	"sync"

	"github.com/shimmy-dev/shimmy/rdma"
)

// Queue is safe for concurrent use.
type Queue struct {
	depth int
	// OnPoll, if set, is called with how many OpImm completions a Poll
	// handed out (verbs re-posts that many receives).
	OnPoll func(imms int)

	mu     sync.Mutex
	items  []rdma.Completion
	imms   int // OpImm completions among items
	err    error
	ready  chan struct{} // signalled when items become non-empty or on close
	space  chan struct{} // signalled when a Poll made room
	closed chan struct{}
}

// New makes a queue that holds depth peer completions before Push waits.
func New(depth int) *Queue {
	return &Queue{depth: depth, ready: make(chan struct{}, 1), space: make(chan struct{}, 1), closed: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// TryPush appends a completion of the peer (OpImm) if the queue holds
// fewer than depth of them and is open.
func (q *Queue) TryPush(c rdma.Completion) bool {
	q.mu.Lock()
	if q.err != nil || q.imms >= q.depth {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, c)
	q.imms++
	q.mu.Unlock()
	signal(q.ready)
	return true
}

// Push is TryPush that waits while the queue is full: the receiver's
// backpressure. It returns false once the queue is closed.
func (q *Queue) Push(c rdma.Completion) bool {
	for {
		if q.TryPush(c) {
			return true
		}
		q.mu.Lock()
		closed := q.err != nil
		q.mu.Unlock()
		if closed {
			return false
		}
		select {
		case <-q.space:
		case <-q.closed:
			return false
		}
	}
}

// PushLocal appends a completion of this side (OpWrite) without waiting:
// their number is bounded by what the local user posts.
func (q *Queue) PushLocal(cs ...rdma.Completion) {
	q.mu.Lock()
	if q.err == nil {
		q.items = append(q.items, cs...)
	}
	q.mu.Unlock()
	signal(q.ready)
}

// Poll moves up to len(cs) completions into cs.
func (q *Queue) Poll(cs []rdma.Completion) int {
	q.mu.Lock()
	n := copy(cs, q.items)
	imms := 0
	for _, c := range cs[:n] {
		if c.Op == rdma.OpImm {
			imms++
		}
	}
	q.items = q.items[:copy(q.items, q.items[n:])]
	q.imms -= imms
	more := len(q.items) > 0
	q.mu.Unlock()
	if more {
		signal(q.ready)
	}
	if imms > 0 {
		signal(q.space)
		if q.OnPoll != nil {
			q.OnPoll(imms)
		}
	}
	return n
}

// Wait polls, waiting for at least one completion. Completions queued
// before the close are still handed out; then it returns the close error.
func (q *Queue) Wait(ctx context.Context, cs []rdma.Completion) (int, error) {
	for {
		if n := q.Poll(cs); n > 0 || len(cs) == 0 {
			return n, nil
		}
		q.mu.Lock()
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return 0, err
		}
		select {
		case <-q.ready:
		case <-q.closed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Close fails later Pushes and Waits with err (after what is queued).
func (q *Queue) Close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	q.err = err
	close(q.closed)
}
