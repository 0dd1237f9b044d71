package cq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/rdma"
)

func imm(i uint32) rdma.Completion { return rdma.Completion{Op: rdma.OpImm, Imm: i} }

// The queue holds depth peer completions, hands everything out in order,
// and local completions never wait.
func TestDepthOrderAndClose(t *testing.T) {
	q := New(2)
	polled := 0
	q.OnPoll = func(n int) { polled += n }
	if !q.TryPush(imm(0)) || !q.TryPush(imm(1)) {
		t.Fatal("a queue of depth 2 refused 2 completions")
	}
	if q.TryPush(imm(2)) {
		t.Fatal("a full queue took a third peer completion")
	}
	q.PushLocal(rdma.Completion{Op: rdma.OpWrite, ID: 9})
	pushed := make(chan bool)
	go func() { pushed <- q.Push(imm(2)) }()
	cs := make([]rdma.Completion, 8)
	var got []rdma.Completion
	for len(got) < 4 {
		n, err := q.Wait(context.Background(), cs)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cs[:n]...)
	}
	if !<-pushed {
		t.Fatal("Push failed once there was room")
	}
	want := []rdma.Completion{imm(0), imm(1), {Op: rdma.OpWrite, ID: 9}, imm(2)}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("completion %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if polled != 3 {
		t.Errorf("OnPoll counted %d immediates, want 3", polled)
	}

	q.TryPush(imm(3))
	cause := rdma.Closed(rdma.ErrTimeout)
	q.Close(cause)
	if n, err := q.Wait(context.Background(), cs); n != 1 || err != nil || cs[0] != imm(3) {
		t.Fatalf("after close: %d %+v %v, want the queued completion first", n, cs[0], err)
	}
	if _, err := q.Wait(context.Background(), cs); !errors.Is(err, rdma.ErrTimeout) {
		t.Fatalf("after close, drained: %v", err)
	}
	if q.Push(imm(4)) || q.TryPush(imm(4)) {
		t.Fatal("a closed queue took a completion")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := New(1).Wait(ctx, cs); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on an empty queue: %v", err)
	}
}
