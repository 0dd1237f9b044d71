package channel

import (
	"context"
	"fmt"
	"testing"
)

// Single-goroutine benchmarks: the cost of each side's own work, without
// the cross-core traffic that bench/ringbench measures between processes.

// benchPublisher joins a fresh 1 MiB ring as its only publisher, closed
// at cleanup.
func benchPublisher(b *testing.B, exclusive bool) *Publisher {
	r := newRing(b, Config{Capacity: 1 << 20})
	p, err := r.NewPublisher(PublisherOptions{Exclusive: exclusive})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkClaimCommit: a publisher alone (no subscriber holds it back).
func BenchmarkClaimCommit(b *testing.B) {
	for _, ex := range []bool{false, true} {
		name := "shared"
		if ex {
			name = "exclusive"
		}
		b.Run(name, func(b *testing.B) {
			p := benchPublisher(b, ex)
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c, err := p.Claim(ctx, 16)
				if err != nil {
					b.Fatal(err)
				}
				c.Buf[0] = byte(i)
				if err := p.Commit(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPeekDone: a subscriber reading a batch of committed 16 B
// messages in place, then the publisher refilling it (half the ring).
func BenchmarkPeekDone(b *testing.B) {
	r := newRing(b, Config{Capacity: 1 << 20})
	p, err := r.NewPublisher(PublisherOptions{Exclusive: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	s, err := r.NewSubscriber(SubscriberOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const batch = 1 << 14
	msg := make([]byte, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		b.StopTimer()
		for k := 0; k < batch; k++ {
			if err := p.Publish(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for k := 0; k < batch && i < b.N; k, i = k+1, i+1 {
			m, err := s.Peek(ctx)
			if err != nil || len(m) != 16 {
				b.Fatal(err, len(m))
			}
			s.Done()
		}
		for {
			if _, err := s.TryNext(nil); err != nil {
				break
			}
		}
	}
}

// BenchmarkClaimBatch: a publisher alone claiming 16-byte frames in
// batches; ns/op is per message.
func BenchmarkClaimBatch(b *testing.B) {
	for _, k := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			p := benchPublisher(b, true)
			ctx := context.Background()
			sizes := make([]int, k)
			for i := range sizes {
				sizes[i] = 16
			}
			b.ReportAllocs()
			for i := 0; i < b.N; {
				bt, err := p.ClaimBatch(ctx, sizes[:min(k, b.N-i)])
				if err != nil {
					b.Fatal(err)
				}
				for j := 0; j < bt.Len(); j++ {
					bt.Buf(j)[0] = byte(i + j)
				}
				if err := p.CommitBatch(bt); err != nil {
					b.Fatal(err)
				}
				i += bt.Len()
			}
		})
	}
}
