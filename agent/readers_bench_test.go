package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// BenchmarkFileReaders reports what file readers cost the agent (issue 10):
//
//	go test -run '^$' -bench FileReaders -benchtime 1x -timeout 10m ./agent/
//
// The agent runs in this process, so /proc/self is the agent; the readers
// are `cat sub` processes, as a user would run them.
//
//   - comeAndGo: 1 000 readers, one blocked on each of 1 000 channels:
//     the agent's threads and Go heap (in use after a GC) before, while
//     they wait, and after they are killed; its CPU while they wait.
//   - publish100: a publisher (mmap, in this process) sends 20 000
//     messages to one block channel with 100 `cat sub` readers: msgs/s
//     until every reader has every message, and the share of messages the
//     readers got (1 = complete; each reader checks order).
func BenchmarkFileReaders(b *testing.B) {
	cfg := testConfig(b)
	cfg.ReapInterval = agent.DefaultReapInterval
	cfg.Quota = &registry.Quota{}
	r := start(b, cfg)
	b.Run("comeAndGo", func(b *testing.B) {
		const n = 1000
		chans := make([]*registry.Channel, n)
		for i := range chans {
			chans[i] = mkChannel(b, r.a.Registry(), "come", fmt.Sprintf("c%d", i), channel.Config{Capacity: 4096})
		}
		threads0, heap0 := settledThreadsHeap(b)
		cmds := make([]*exec.Cmd, n)
		for i := range cmds {
			cmds[i] = exec.Command("cat", filepath.Join(cfg.MountPoint, "come", fmt.Sprintf("c%d", i), "sub"))
			if err := cmds[i].Start(); err != nil {
				b.Fatal(err)
			}
		}
		eventually(b, time.Minute, func() error { return subscribers(chans, 1) })
		time.Sleep(2 * time.Second)
		threads1, heap1 := settledThreadsHeap(b)
		cpu0, w0 := cpuTime(b), time.Now()
		time.Sleep(5 * time.Second)
		idle := float64(cpuTime(b)-cpu0) / float64(time.Since(w0))
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGKILL)
			c.Wait()
		}
		eventually(b, time.Minute, func() error { return subscribers(chans, 0) })
		time.Sleep(time.Second)
		threads2, heap2 := settledThreadsHeap(b)
		b.ReportMetric(float64(threads0), "threads_before")
		b.ReportMetric(float64(threads1), "threads_during")
		b.ReportMetric(float64(threads2), "threads_after")
		b.ReportMetric(heap0/(1<<20), "heap_MiB_before")
		b.ReportMetric(heap1/(1<<20), "heap_MiB_during")
		b.ReportMetric(heap2/(1<<20), "heap_MiB_after")
		b.ReportMetric(100*idle, "cpu_%_during")
	})
	b.Run("publish100", func(b *testing.B) {
		const readers, msgs = 100, 20000
		ch := mkChannel(b, r.a.Registry(), "pub", "c", channel.Config{Capacity: 1 << 20, MemberSlots: 128})
		dir := b.TempDir()
		cmds := make([]*exec.Cmd, readers)
		for i := range cmds {
			out, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
			if err != nil {
				b.Fatal(err)
			}
			cmds[i] = exec.Command("cat", filepath.Join(cfg.MountPoint, "pub", "c", "sub"))
			cmds[i].Stdout = out
			if err := cmds[i].Start(); err != nil {
				b.Fatal(err)
			}
			out.Close()
		}
		b.Cleanup(func() {
			for _, c := range cmds {
				c.Process.Signal(syscall.SIGKILL)
				c.Wait()
			}
		})
		eventually(b, time.Minute, func() error { return subscribers([]*registry.Channel{ch}, readers) })
		h, err := ch.Open()
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		p, err := h.NewPublisher(channel.PublisherOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		t0 := time.Now()
		for i := 0; i < msgs; i++ {
			if err := p.Publish(context.Background(), []byte(strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
		got := 0
		eventually(b, 2*time.Minute, func() error {
			got = 0
			for i := range cmds {
				n, err := countInOrder(filepath.Join(dir, strconv.Itoa(i)))
				if err != nil {
					b.Fatalf("reader %d: %v", i, err)
				}
				got += n
			}
			if got < readers*msgs {
				return fmt.Errorf("%d of %d messages delivered", got, readers*msgs)
			}
			return nil
		})
		el := time.Since(t0)
		b.ReportMetric(msgs/el.Seconds(), "msgs/s")
		b.ReportMetric(float64(got)/(readers*msgs), "complete")
	})
}

func mkChannel(b *testing.B, reg *registry.Registry, ns, name string, cfg channel.Config) *registry.Channel {
	b.Helper()
	n, err := reg.Namespace(ns)
	if err != nil {
		if n, err = reg.CreateNamespace(ns, registry.Attr{Mode: 0o755}); err != nil {
			b.Fatal(err)
		}
	}
	ch, err := n.CreateChannel(name, registry.CreateOptions{Config: &cfg})
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

// subscribers checks that every channel has want subscribers.
func subscribers(chans []*registry.Channel, want int) error {
	for _, ch := range chans {
		if got := ch.Stats().Subscribers; int(got) != want {
			return fmt.Errorf("%s: %d subscribers, want %d", ch.Name, got, want)
		}
	}
	return nil
}

// settledThreadsHeap returns the thread count and the Go heap in use after
// two collections (sync.Pool buffers survive one).
func settledThreadsHeap(b *testing.B) (int, float64) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procThreads(b), float64(ms.HeapInuse)
}

func procThreads(b *testing.B) int {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	b.Fatal("no Threads line")
	return 0
}

// countInOrder counts the lines of a reader's output, checking that they
// are 0, 1, 2, ... (a partial last line is not counted).
func countInOrder(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(raw), "\n")
	lines = lines[:len(lines)-1] // after the last newline: a partial line or nothing
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			return i, fmt.Errorf("line %d is %q", i, l)
		}
	}
	return len(lines), nil
}
