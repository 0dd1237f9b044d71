package channel

import (
	"context"
	"math"
	"testing"
)

func TestPositionAccessors(t *testing.T) {
	p := MakePosition(7, 0xfffffff0)
	if p.Seq() != 7 || p.Units() != 0xfffffff0 || uint64(p) != 7<<32|0xfffffff0 || p.String() != "7/4294967280" {
		t.Errorf("MakePosition(7, 0xfffffff0) = %#x: seq %d units %d %q", uint64(p), p.Seq(), p.Units(), p)
	}
}

func TestPositionCompare(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p, q     Position
		before   bool
		messages uint32
		bytes    uint64
	}{
		{"equal", MakePosition(3, 100), MakePosition(3, 100), false, 0, 0},
		{"ahead", MakePosition(5, 110), MakePosition(3, 100), false, 2, 160},
		{"behind", MakePosition(3, 100), MakePosition(5, 110), true, math.MaxUint32 - 1, (1<<32 - 10) << 4},
		{"ahead across the units wrap", MakePosition(9, 4), MakePosition(8, math.MaxUint32-3), false, 1, 8 << 4},
		{"behind across the units wrap", MakePosition(8, math.MaxUint32-3), MakePosition(9, 4), true, math.MaxUint32, (1<<32 - 8) << 4},
		{"ahead across the seq wrap", MakePosition(2, 500), MakePosition(math.MaxUint32-1, 400), false, 4, 100 << 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Before(tc.q); got != tc.before {
				t.Errorf("%v.Before(%v) = %v", tc.p, tc.q, got)
			}
			if got := tc.p.MessagesSince(tc.q); got != tc.messages {
				t.Errorf("%v.MessagesSince(%v) = %d, want %d", tc.p, tc.q, got, tc.messages)
			}
			if got := tc.p.BytesSince(tc.q); got != tc.bytes {
				t.Errorf("%v.BytesSince(%v) = %d, want %d", tc.p, tc.q, got, tc.bytes)
			}
		})
	}
}

func TestPositionExtend(t *testing.T) {
	const lap = 1 << 32
	for _, tc := range []struct {
		name string
		p    Position
		prev Extended
		want Extended
	}{
		{"from zero", MakePosition(10, 4096), Extended{}, Extended{10, 4096}},
		{"same", MakePosition(10, 4096), Extended{10, 4096}, Extended{10, 4096}},
		{"ahead in the first lap", MakePosition(20, 9000), Extended{10, 4096}, Extended{20, 9000}},
		{"across the units wrap", MakePosition(11, 5), Extended{10, lap - 3}, Extended{11, lap + 5}},
		{"across the seq wrap", MakePosition(2, 100), Extended{lap - 1, 90}, Extended{lap + 2, 100}},
		{"both wrapped in a later lap", MakePosition(1, 1), Extended{5*lap - 2, 7*lap - 2}, Extended{5*lap + 1, 7*lap + 1}},
		{"behind prev, before the wrap", MakePosition(math.MaxUint32, math.MaxUint32-9), Extended{lap + 1, lap + 1}, Extended{lap - 1, lap - 10}},
		{"behind prev, same lap", MakePosition(5, 100), Extended{3*lap + 8, 3*lap + 200}, Extended{3*lap + 5, 3*lap + 100}},
		{"half a range ahead", MakePosition(0, 1<<31-1), Extended{lap, lap}, Extended{lap, lap + 1<<31 - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.Extend(tc.prev)
			if got != tc.want {
				t.Errorf("%v.Extend(%v) = %v, want %v", tc.p, tc.prev, got, tc.want)
			}
			if got.Position() != tc.p {
				t.Errorf("%v.Position() = %v, want %v back", got, got.Position(), tc.p)
			}
		})
	}
}

// A reader that extends every position it sees from the previous one
// follows a counter through several wraps without losing one.
func TestPositionExtendFollowsWraps(t *testing.T) {
	const step = 1<<31 - 12345 // under 2^31 per read: never ambiguous
	var e Extended
	want := uint64(0)
	for i := 0; i < 20; i++ {
		want += step
		e = MakePosition(uint32(want), uint32(want)).Extend(e)
		if e.Seq != want || e.Units != want || e.Bytes() != want<<4 {
			t.Fatalf("step %d: extended %v, want %d/%d", i, e, want, want)
		}
	}
}

// QueueStats and Stats decode what publishers and subscribers did.
func TestStats(t *testing.T) {
	ctx := context.Background()
	t.Run("pubsub", func(t *testing.T) {
		r := newRing(t, Config{Capacity: 4096, Policy: PolicyOverwrite})
		sub, err := r.NewSubscriber(SubscriberOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		pub, err := r.NewPublisher(PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		if qs := r.QueueStats(0); qs.Messages != 0 || qs.Bytes != 0 || qs.InUse != 0 {
			t.Fatalf("fresh ring: %+v", qs)
		}
		const n = 5
		for i := 0; i < n; i++ {
			if err := pub.Publish(ctx, make([]byte, 20)); err != nil { // 36 bytes: a 48-byte frame
				t.Fatal(err)
			}
		}
		qs := r.QueueStats(0)
		if qs.Messages != n || qs.Bytes != n*48 || qs.Tail.Seq() != n {
			t.Errorf("after %d messages: %+v", n, qs)
		}
		if _, err := sub.Next(ctx, nil); err != nil {
			t.Fatal(err)
		}
		sub.flush() // the cursor is stored every 64 messages; store it now
		st := r.Stats()
		if st.Messages != n || st.Bytes != n*48 || st.Publishers != 1 || st.Subscribers != 1 || st.LagMax != n-1 {
			t.Errorf("stats %+v, want %d messages, %d bytes, 1 publisher, 1 subscriber, lag %d", st, n, n*48, n-1)
		}
		if r.QueueStats(1) != (QueueStats{}) || r.QueueStats(-1) != (QueueStats{}) {
			t.Error("a queue out of range gives counters")
		}
	})
	t.Run("stream", func(t *testing.T) {
		r := newRing(t, Config{Type: TypeStream, Capacity: 4096})
		pub, err := r.NewPublisher(PublisherOptions{Queue: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		rd, err := r.NewReader(ReaderOptions{Queue: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		for i := 0; i < 3; i++ {
			if err := pub.Publish(ctx, []byte("hello")); err != nil { // a 32-byte frame
				t.Fatal(err)
			}
		}
		if _, err := rd.Next(ctx, nil); err != nil {
			t.Fatal(err)
		}
		qs := r.QueueStats(1)
		if qs.Messages != 3 || qs.Waiting != 2 || qs.Bytes != 96 || qs.Head.Seq() != 1 {
			t.Errorf("queue 1: %+v, want 3 messages, 2 waiting, 96 bytes", qs)
		}
		if q0 := r.QueueStats(0); q0.Messages != 0 || q0.Waiting != 0 {
			t.Errorf("queue 0 is untouched: %+v", q0)
		}
		st := r.Stats()
		if st.Messages != 3 || st.LagMax != 2 || st.Publishers != 1 || st.Subscribers != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}
