package ringbench

import (
	"testing"
	"time"
)

// One iteration is one message. Every sub-benchmark starts its child once
// per b.N round and streams b.N messages through it, so process start-up
// stays outside the timed region (b.ResetTimer once the child has joined).
//
//	go test -run XXX -bench . -benchtime 2s ./bench/ringbench/

var (
	impls = []string{implCopy, implExcl, implZero, implBatch, implBare, implSock}
	sizes = []int{16, 4 << 10, 100 << 10}
	idles = []string{"busy", "sleep"}
)

// BenchmarkThroughput publishes at saturation and reports messages and
// bytes per second, from the first message sent to the child's report
// that it received and checked the last.
func BenchmarkThroughput(b *testing.B) {
	each(b, modeThroughput, func(b *testing.B, sp spec) {
		_, el := bench(b, sp)
		secs := el.Seconds()
		b.ReportMetric(float64(b.N)/secs, "msgs/s")
		b.ReportMetric(float64(b.N)*float64(sp.Size)/secs/1e9, "GB/s")
	})
}

// BenchmarkLatency publishes one message per interval (20 µs busy, 100 µs
// sleeping), each stamped with CLOCK_MONOTONIC, and reports the median and
// 99th percentile of the one-way latency the child measured.
func BenchmarkLatency(b *testing.B) {
	each(b, modeLatency, func(b *testing.B, sp spec) {
		res, _ := bench(b, sp)
		latencyMetrics(b, res)
	})
}

// BenchmarkFutexWake is the floor of the sleeping strategy: the parent
// stamps a shared word and wakes the child asleep on it with FUTEX_WAKE,
// one wake-up every 100 µs; the child reports now - stamp. held: the
// child sleeps as C does and as Shimmy's subscribers do
// (internal/heldsleep); syscall: as an ordinary Go system call, which the
// runtime may take the processor from.
func BenchmarkFutexWake(b *testing.B) {
	for _, c := range []struct{ name, idle string }{{"held", "sleep"}, {"syscall", idleSleepSyscall}} {
		b.Run(c.name, func(b *testing.B) {
			res, _ := bench(b, spec{Mode: modeFutex, Impl: "futex", Idle: c.idle, N: b.N})
			latencyMetrics(b, res)
		})
	}
}

func each(b *testing.B, mode string, f func(*testing.B, spec)) {
	for _, impl := range impls {
		b.Run(impl, func(b *testing.B) {
			for _, size := range sizes {
				b.Run(sizeName(size), func(b *testing.B) {
					for _, idle := range idles {
						b.Run(idle, func(b *testing.B) {
							f(b, spec{Mode: mode, Impl: impl, Size: size, Idle: idle, N: b.N, Cap: capacity(size)})
						})
					}
				})
			}
		})
	}
}

func bench(b *testing.B, sp spec) (result, time.Duration) {
	res, el, err := runPair(sp, b.ResetTimer)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	return res, el
}

func latencyMetrics(b *testing.B, res result) {
	if res.Stamps != b.N {
		b.Fatalf("%d latency samples for %d messages", res.Stamps, b.N)
	}
	b.ReportMetric(float64(res.P50), "p50-ns")
	b.ReportMetric(float64(res.P99), "p99-ns")
	b.ReportMetric(0, "ns/op") // the pacing interval, not a cost
}
