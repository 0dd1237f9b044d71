package ringbench

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSmoke runs every benchmark case end to end with a few messages, so
// that `go test` (without -bench) proves the harness works: the child
// joins, every message arrives intact, stamps come back.
func TestSmoke(t *testing.T) {
	type tc struct {
		name string
		sp   spec
	}
	var cases []tc
	for _, impl := range impls {
		for _, idle := range idles {
			cases = append(cases,
				tc{impl + "/throughput/16B/" + idle, spec{Mode: modeThroughput, Impl: impl, Size: 16, Idle: idle, N: 3000, Cap: capacity(16)}},
				tc{impl + "/throughput/100KiB/" + idle, spec{Mode: modeThroughput, Impl: impl, Size: 100 << 10, Idle: idle, N: 100, Cap: capacity(100 << 10)}},
				tc{impl + "/latency/16B/" + idle, spec{Mode: modeLatency, Impl: impl, Size: 16, Idle: idle, N: 50, Cap: capacity(16)}},
				tc{impl + "/latency/4KiB/" + idle, spec{Mode: modeLatency, Impl: impl, Size: 4 << 10, Idle: idle, N: 50, Cap: capacity(4 << 10)}},
			)
		}
	}
	cases = append(cases, tc{"futex", spec{Mode: modeFutex, Impl: "futex", Idle: "sleep", N: 50}},
		tc{"futex-syscall", spec{Mode: modeFutex, Impl: "futex", Idle: idleSleepSyscall, N: 50}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, _, err := runPair(c.sp, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.N != c.sp.N || res.Bad != 0 {
				t.Fatalf("received %d messages, %d bad; want %d good", res.N, res.Bad, c.sp.N)
			}
			if c.sp.Mode != modeThroughput && (res.Stamps != c.sp.N || res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.Max) {
				t.Fatalf("latency: %d samples for %d messages, p50 %d p99 %d max %d ns", res.Stamps, c.sp.N, res.P50, res.P99, res.Max)
			}
		})
	}
}

// TestSmokeDetectsDamage spoils one message and expects the child to
// report it: the benchmarks' integrity check must be able to fail.
func TestSmokeDetectsDamage(t *testing.T) {
	for _, impl := range impls {
		for _, size := range []int{16, 4 << 10} {
			t.Run(fmt.Sprintf("%s/%s", impl, sizeName(size)), func(t *testing.T) {
				sp := spec{Mode: modeThroughput, Impl: impl, Size: size, Idle: "sleep", N: 200, Cap: capacity(size), Spoil: 101}
				res, _, err := runPair(sp, nil)
				if err == nil || !strings.Contains(err.Error(), "message 100: last 8 bytes carry 101") {
					t.Fatalf("spoiled message 100: got error %v", err)
				}
				if res.N != sp.N || res.Bad != 1 {
					t.Fatalf("received %d messages, %d bad; want %d with 1 bad", res.N, res.Bad, sp.N)
				}
			})
		}
	}
}

// TestNanotimeIsClockMonotonic pins the assumption that stamps taken with
// the runtime's vDSO clock compare with CLOCK_MONOTONIC in another process.
func TestNanotimeIsClockMonotonic(t *testing.T) {
	var ts unix.Timespec
	for i := 0; i < 100; i++ {
		a := nanotime()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		b := nanotime()
		if c := ts.Nano(); c < a || c > b {
			t.Fatalf("CLOCK_MONOTONIC %d outside the runtime clock's [%d, %d]", c, a, b)
		}
	}
}
