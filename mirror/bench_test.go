package mirror

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// BenchmarkMirror: messages published on a in batches of 64 and read on b
// (block, 4 MiB rings, two mirrors in one process over rdma/tcp on
// loopback): the mirror's throughput, with what each batch costs the
// importer (claims, marks).
//
//	go test -run '^$' -bench Mirror -benchtime 200000x -count 3 ./mirror/
func BenchmarkMirror(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := newCluster(b, channel.Config{Capacity: 4 << 20}, nil, "a", "b")
			sub, err := mapRing(b, c.hosts[1]).NewSubscriber(channel.SubscriberOptions{From: channel.StartOldest})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Close()
			pub, err := mapRing(b, c.hosts[0]).NewPublisher(channel.PublisherOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			c.linksUp()
			msgs := make([][]byte, 64)
			for i := range msgs {
				msgs[i] = make([]byte, size)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				for left := b.N; left > 0; {
					n, err := pub.PublishBatch(ctx, msgs[:min(left, len(msgs))])
					if err != nil {
						done <- err
						return
					}
					left -= n
				}
				done <- nil
			}()
			for i := 0; i < b.N; i++ {
				if _, err := sub.Peek(ctx); err != nil {
					b.Fatal(err)
				}
				sub.Done()
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkStoreHWM: one store of an importer's mark (on /dev/shm, as the
// state directory is), which each claim of a batch costs.
func BenchmarkStoreHWM(b *testing.B) {
	mk, _, err := openHWM(filepath.Join(testenv.ShmDir(b, "mirror-hwm-"), "hwm"))
	if err != nil {
		b.Fatal(err)
	}
	defer mk.close()
	rec := hwmRec{markRec: markRec{Epoch: 1}}
	for i := 0; i < b.N; i++ {
		rec.Seq, rec.Tail, rec.Have, rec.Pend = uint64(i), uint64(i+1), uint64(i), uint64(i+1)
		if err := mk.storeHWM(rec); err != nil {
			b.Fatal(err)
		}
	}
}
