package agent_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// BenchmarkIdleScale reports the agent's resident memory and idle CPU
// with 0, 1 000, 10 000 and 100 000 idle channels of 4 KiB (issue 10):
//
//	go test -run '^$' -bench IdleScale -benchtime 1x -timeout 30m ./agent/
//
// The agent runs in this process (mounted, reaper and metrics on), so
// /proc/self is the agent; the channels are made through its registry, in
// namespaces of 1 000. Each step adds channels to the previous ones, then
// lets the reaper settle and measures CPU over idleWindow. A step needs
// vm.max_map_count above its channel count (one mapping per channel);
// otherwise it is skipped, saying so.
func BenchmarkIdleScale(b *testing.B) {
	const idleWindow = 10 * time.Second
	cfg := testConfig(b)
	cfg.ReapInterval = agent.DefaultReapInterval
	cfg.Quota = &registry.Quota{} // no limits: this is the node's owner measuring
	r := start(b, cfg)
	made := 0
	for _, n := range []int{0, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			if max := procInt(b, "/proc/sys/vm/max_map_count"); n+10000 > max {
				b.Skipf("vm.max_map_count is %d: %d channels need about %d (sysctl -w vm.max_map_count=%d)", max, n, n+10000, n+20000)
			}
			t0 := time.Now()
			for ; made < n; made++ {
				if err := makeChannel(r.a.Registry(), made); err != nil {
					b.Fatalf("channel %d: %v", made, err)
				}
			}
			created := time.Since(t0)
			time.Sleep(3 * time.Second) // the reaper's first visits of the new channels
			runtime.GC()
			debug.FreeOSMemory()
			cpu0, w0 := cpuTime(b), time.Now()
			time.Sleep(idleWindow)
			idle := float64(cpuTime(b)-cpu0) / float64(time.Since(w0))
			st := procStatus(b)
			b.ReportMetric(float64(st["VmRSS"])/1024, "rss_MiB")
			b.ReportMetric(float64(st["RssAnon"])/1024, "anon_MiB")
			b.ReportMetric(float64(st["RssShmem"])/1024, "shmem_MiB")
			b.ReportMetric(100*idle, "idle_cpu_%")
			b.ReportMetric(float64(fdCount(b)), "fds")
			if n > 0 {
				b.ReportMetric(float64(created.Microseconds())/float64(n), "create_µs/ch")
			}
		})
	}
}

func makeChannel(reg *registry.Registry, i int) error {
	nsName := fmt.Sprintf("ns%03d", i/1000)
	ns, err := reg.Namespace(nsName)
	if err != nil {
		if ns, err = reg.CreateNamespace(nsName, registry.Attr{Mode: 0o755}); err != nil {
			return err
		}
	}
	_, err = ns.CreateChannel(fmt.Sprintf("c%d", i), registry.CreateOptions{Config: &channel.Config{Capacity: 4096}})
	return err
}

// cpuTime is the process's user and system time (/proc/self/stat).
func cpuTime(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procStatus returns the kB fields of /proc/self/status.
func procStatus(b *testing.B) map[string]int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			out[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return out
}

func procInt(b *testing.B, path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return n
}

func fdCount(b *testing.B) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	return len(ents)
}
