package channel

import (
	"context"
	"testing"
)

// BenchmarkStreamTake: a stream reader taking 16 B records a publisher
// wrote just before, one goroutine: the take path's own cost.
//
//	go test -run '^$' -bench StreamTake -count 5 ./channel/
func BenchmarkStreamTake(b *testing.B) {
	_, p, rd := streamPair(b)
	benchTakes(b, p, func(buf []byte) ([]byte, error) { return rd.TryNext(buf) })
}

// streamPair is a 1 MiB stream ring with a publisher and a reader, closed
// at cleanup.
func streamPair(b *testing.B) (*Ring, *Publisher, *Reader) {
	r := newRing(b, Config{Type: TypeStream, Capacity: 1 << 20})
	p, err := r.NewPublisher(PublisherOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	rd, err := r.NewReader(ReaderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rd.Close() })
	return r, p, rd
}

// benchTakes publishes a batch of 16 B records and takes them with take,
// over and over: one iteration is one record.
func benchTakes(b *testing.B, p *Publisher, take func([]byte) ([]byte, error)) {
	ctx := context.Background()
	msg := make([]byte, 16)
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		b.StopTimer()
		k := min(b.N-i, 1024)
		for range k {
			if err := p.Publish(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for range k {
			var err error
			if buf, err = take(buf); err != nil {
				b.Fatal(err)
			}
		}
		i += k
	}
}
