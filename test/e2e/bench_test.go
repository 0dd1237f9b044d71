package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// BenchmarkFileIO measures, through a real mount, one write(2) publish and
// one read(2) receive (median and p99 in µs) and the message rate of the
// batched data files, for 16-byte messages, beside the mmap path's figures.
//
//	go test ./test/e2e -run '^$' -bench FileIO -benchtime 2s
func BenchmarkFileIO(b *testing.B) {
	a := startAgent(b)
	const size = 16
	var seq atomic.Int64
	newChan := func(b *testing.B, ctl string) string {
		return a.mkChan(b, fmt.Sprintf("bench/c%d", seq.Add(1)), ctl)
	}
	msg := message(0, size)

	b.Run("write-pub", func(b *testing.B) {
		// Overwrite with no subscriber: a publish never waits for space.
		dir := newChan(b, "policy overwrite")
		f := openFile(b, filepath.Join(dir, "pub"), os.O_WRONLY)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := f.Write(msg); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat, b.N)
	})
	b.Run("read-msg", func(b *testing.B) {
		// An mmap publisher keeps the ring full: each read(2) finds a message.
		dir := newChan(b, "")
		f := openFile(b, filepath.Join(dir, "msg"), os.O_RDONLY)
		waitStat(b, dir, "subscribers", 1)
		stop := feed(b, dir, msg)
		buf := make([]byte, 1<<16)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			n, err := f.Read(buf)
			if err != nil || n != size {
				b.Fatalf("read %d: %d bytes, %v", i, n, err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		stop()
		report(b, lat, b.N)
	})
	b.Run("read-sub-batched", func(b *testing.B) {
		dir := newChan(b, "")
		f := openFile(b, filepath.Join(dir, "sub"), os.O_RDONLY)
		waitStat(b, dir, "subscribers", 1)
		stop := feed(b, dir, msg)
		buf := make([]byte, 1<<20)
		b.ResetTimer()
		got := 0
		reads := 0
		for got < b.N {
			n, err := f.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += bytes.Count(buf[:n], []byte("\n"))
			reads++
		}
		b.StopTimer()
		stop()
		b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "msgs/s")
		b.ReportMetric(float64(got)/float64(reads), "msgs/read")
	})
	b.Run("write-publines-batched", func(b *testing.B) {
		dir := newChan(b, "policy overwrite")
		f := openFile(b, filepath.Join(dir, "publines"), os.O_WRONLY)
		line := append(append([]byte(nil), msg[:size-1]...), '\n') // 16 bytes with the newline
		batch := bytes.Repeat(line, 4096)
		b.ResetTimer()
		for sent := 0; sent < b.N; sent += 4096 {
			k := min(4096, b.N-sent)
			if _, err := f.Write(batch[:k*len(line)]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("mmap-publish", func(b *testing.B) {
		dir := newChan(b, "policy overwrite")
		r := mapRing(b, dir)
		p, err := r.NewPublisher(channel.PublisherOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if err := p.Publish(context.Background(), msg); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat, b.N)
	})
	b.Run("mmap-receive", func(b *testing.B) {
		dir := newChan(b, "")
		r := mapRing(b, dir)
		s, err := r.NewSubscriber(channel.SubscriberOptions{Idle: channel.IdleBusy})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stop := feed(b, dir, msg)
		var buf []byte
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if buf, err = s.Next(context.Background(), buf); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		stop()
		report(b, lat, b.N)
	})
}

func openFile(b *testing.B, path string, flag int) *os.File {
	b.Helper()
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// feed publishes msg through an mmap publisher until stopped.
func feed(b *testing.B, dir string, msg []byte) (stop func()) {
	r := mapRing(b, dir)
	p, err := r.NewPublisher(channel.PublisherOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.Close()
		for ctx.Err() == nil {
			if err := p.Publish(ctx, msg); err != nil {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// report adds the median and p99 latency in µs and the message rate.
func report(b *testing.B, lat []time.Duration, n int) {
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(us(0.5), "p50-µs")
	b.ReportMetric(us(0.99), "p99-µs")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}
