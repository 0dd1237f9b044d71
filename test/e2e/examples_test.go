package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// The examples are built on first use into binDir, which TestMain removes
// after the run.
var (
	examplesMu    sync.Mutex
	exampleBins   = map[string]string{}
	exampleBuildE = map[string]error{}
)

// exampleBin builds examples/<name> once and returns its binary.
func exampleBin(t testing.TB, name string) string {
	t.Helper()
	requireE2E(t)
	examplesMu.Lock()
	defer examplesMu.Unlock()
	if bin, ok := exampleBins[name]; ok {
		return bin
	}
	if err, ok := exampleBuildE[name]; ok {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "example-"+name)
	if err := testenv.Build(bin, "github.com/shimmy-dev/shimmy/examples/"+name); err != nil {
		exampleBuildE[name] = err
		t.Fatal(err)
	}
	exampleBins[name] = bin
	return bin
}

// pubLines is what mmap-sub prints for mmap-pub's messages start..start+n-1 of 16 bytes.
func pubLines(start, n int) string {
	var b strings.Builder
	for i := start; i < start+n; i++ {
		fmt.Fprintf(&b, "msg %08d....\n", i)
	}
	return b.String()
}

// mustExit waits for p and fails the test unless it exited with status 0.
func (p *proc) mustExit(t testing.TB) {
	t.Helper()
	if err := p.wait(t); err != nil {
		t.Fatalf("%v: %v\nstdout: %s\nstderr: %s", p.cmd.Args, err, tail(p.out.String(), 10), p.errOut.String())
	}
}

var subSummary = regexp.MustCompile(`received (\d+) messages, lost (\d+)`)

// subCounts parses mmap-sub's final line.
func subCounts(t testing.TB, stderr string) (received, lost uint64) {
	t.Helper()
	m := subSummary.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary from mmap-sub: %q", stderr)
	}
	received, _ = strconv.ParseUint(m[1], 10, 64)
	lost, _ = strconv.ParseUint(m[2], 10, 64)
	return received, lost
}

func TestExampleMmapPubSub(t *testing.T) {
	a := startAgent(t)
	pub, sub := exampleBin(t, "mmap-pub"), exampleBin(t, "mmap-sub")
	const n = 2000
	for i, tc := range []struct {
		name string
		ctl  string
		args []string
	}{
		{"block-sleep", "", []string{"-idle", "sleep"}},
		{"block-busy", "", []string{"-idle", "busy"}},
		// A ring of 4 KiB holds 128 of these 32-byte frames: the
		// publisher waits for the subscriber many times over.
		{"small-ring-default", "capacity 4K", []string{"-idle", "default"}},
		{"overwrite-busy", "policy overwrite\ncapacity 1M", []string{"-idle", "busy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := a.mkChan(t, fmt.Sprintf("ex/pubsub%d", i), tc.ctl)
			s := startProc(t, nil, sub, append([]string{"-dir", dir, "-n", strconv.Itoa(n)}, tc.args...)...)
			s.waitErrLine(t, "subscribed") // it starts at the next message: publish after it joined
			p := startProc(t, nil, pub, "-dir", dir, "-n", strconv.Itoa(n))
			p.mustExit(t)
			if want := fmt.Sprintf("published %d messages of 16 bytes", n); !strings.Contains(p.out.String(), want) {
				t.Errorf("mmap-pub said %q, want %q", p.out.String(), want)
			}
			s.mustExit(t)
			if got, want := s.out.String(), pubLines(0, n); got != want {
				t.Errorf("mmap-sub printed %d lines (want %d): first %q, last %q", strings.Count(got, "\n"), n, got[:min(len(got), 40)], tail(got, 2))
			}
			if r, l := subCounts(t, s.errOut.String()); r != n || l != 0 {
				t.Errorf("mmap-sub received %d, lost %d; want %d, 0", r, l, n)
			}
			if m, err := stat(dir, "messages"); err != nil || m != n {
				t.Errorf("stats messages %d (%v), want %d", m, err, n)
			}
		})
	}
}

// TestExampleMmapSubOldest: -oldest reads what was published before it
// joined, and $SHIMMY_CHANNEL stands in for -dir (as in a pod).
func TestExampleMmapSubOldest(t *testing.T) {
	a := startAgent(t)
	pub, sub := exampleBin(t, "mmap-pub"), exampleBin(t, "mmap-sub")
	dir := a.mkChan(t, "ex/oldest", "")
	out := shRun(t, fmt.Sprintf("SHIMMY_CHANNEL=%s %s -n 50", dir, pub))
	if !strings.Contains(out, "published 50 messages") {
		t.Fatalf("mmap-pub: %q", out)
	}
	out = shRun(t, fmt.Sprintf("SHIMMY_CHANNEL=%s %s -oldest -n 50 -idle sleep 2>/dev/null", dir, sub))
	if want := pubLines(0, 50); out != want {
		t.Errorf("mmap-sub -oldest printed %q, want %q", out, want)
	}
	// Without -dir or $SHIMMY_CHANNEL it says what is missing.
	cmd := exec.Command(sub)
	cmd.Env = append(os.Environ(), "SHIMMY_CHANNEL=")
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "SHIMMY_CHANNEL") {
		t.Errorf("mmap-sub with no channel: %v, %q", err, b)
	}
}

// TestExampleMmapSubLost: a subscriber lapped on an overwrite channel
// reports exactly how many messages it lost.
func TestExampleMmapSubLost(t *testing.T) {
	a := startAgent(t)
	pub, sub := exampleBin(t, "mmap-pub"), exampleBin(t, "mmap-sub")
	// A long lease: the subscriber is stopped on purpose and must not be
	// evicted meanwhile.
	dir := a.mkChan(t, "ex/lost", "policy overwrite\ncapacity 4K\nlease 1h")
	const n = 10000
	s := startProc(t, nil, sub, "-dir", dir, "-n", strconv.Itoa(n), "-count", "-idle", "sleep")
	s.waitErrLine(t, "subscribed")
	// Stopped, it reads nothing while 10000 messages go through a ring
	// that holds 128: it must fall laps behind.
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, nil, pub, "-dir", dir, "-n", strconv.Itoa(n))
	p.mustExit(t)
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.mustExit(t)
	r, l := subCounts(t, s.errOut.String())
	if r+l != n || l == 0 || r == 0 || r > 4096/32 {
		t.Errorf("mmap-sub received %d and lost %d of %d; want all accounted for, some lost, at most a ring's worth (128) received", r, l, n)
	}
	if !strings.Contains(s.errOut.String(), "the publishers lapped this subscriber") {
		t.Errorf("mmap-sub did not report the loss as it happened: %q", s.errOut.String())
	}
	if s.out.String() != "" {
		t.Errorf("mmap-sub -count printed messages: %q", tail(s.out.String(), 3))
	}
}

var zeroCopyLine = regexp.MustCompile(`peeked (\d+): (\d+) valid and intact, (\d+) overwritten while read; lost (\d+); corrupt (\d+)`)

func TestExampleZerocopy(t *testing.T) {
	a := startAgent(t)
	bin := exampleBin(t, "zerocopy")
	for i, tc := range []struct {
		name string
		ctl  string
		n    int
		size int
	}{
		{"block-4K", "", 20000, 4096},
		{"block-small-ring", "capacity 16K", 20000, 1000},
		// Overwrite: whether a message is lapped depends on scheduling,
		// so only the accounting is checked.
		{"overwrite", "policy overwrite\ncapacity 16K", 20000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := a.mkChan(t, fmt.Sprintf("ex/zc%d", i), tc.ctl)
			p := startProc(t, nil, bin, "-dir", dir, "-n", strconv.Itoa(tc.n), "-size", strconv.Itoa(tc.size))
			p.mustExit(t)
			out := p.out.String()
			if want := fmt.Sprintf("committed %d messages of %d bytes", tc.n, tc.size); !strings.Contains(out, want) {
				t.Errorf("zerocopy said %q, want %q", out, want)
			}
			m := zeroCopyLine.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no subscriber line: %q", out)
			}
			v := make([]int, 5)
			for k := range v {
				v[k], _ = strconv.Atoi(m[k+1])
			}
			peeked, valid, overwritten, lost, corrupt := v[0], v[1], v[2], v[3], v[4]
			if peeked+lost != tc.n || valid+overwritten+corrupt != peeked || corrupt != 0 {
				t.Errorf("zerocopy: %s", m[0])
			}
			if !strings.Contains(tc.ctl, "overwrite") {
				if valid != tc.n {
					t.Errorf("block channel: %s; want all %d valid", m[0], tc.n)
				}
			}
		})
	}
}

var workerLine = regexp.MustCompile(`(?m)^worker (\S+): (\d+) jobs$`)

// workerJobs sums the "worker K: N jobs" lines, one per worker.
func workerJobs(t testing.TB, out string) (workers, jobs int) {
	t.Helper()
	for _, m := range workerLine.FindAllStringSubmatch(out, -1) {
		k, _ := strconv.Atoi(m[2])
		workers++
		jobs += k
	}
	return workers, jobs
}

func checkClient(t testing.TB, out string, jobs int) {
	t.Helper()
	for _, want := range []string{
		fmt.Sprintf("%d jobs, %d replies", jobs, jobs),
		"missing 0, duplicated 0",
		"every job answered exactly once",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
}

func TestExampleWorkerPool(t *testing.T) {
	a := startAgent(t)
	bin := exampleBin(t, "worker-pool")
	const jobs = 3000

	t.Run("goroutines", func(t *testing.T) {
		// A small ring: writers on both sides wait for room many times.
		dir := a.mkChan(t, "ex/pool1", "type stream\ncapacity 4K")
		p := startProc(t, nil, bin, "-dir", dir, "-jobs", strconv.Itoa(jobs), "-workers", "4")
		p.mustExit(t)
		out := p.out.String()
		checkClient(t, out, jobs)
		if w, n := workerJobs(t, out); w != 4 || n != jobs {
			t.Errorf("%d workers did %d jobs; want 4 and %d:\n%s", w, n, jobs, out)
		}
	})

	t.Run("processes", func(t *testing.T) {
		dir := a.mkChan(t, "ex/pool2", "type stream")
		var workers []*proc
		for id := 1; id <= 3; id++ {
			workers = append(workers, startProc(t, nil, bin, "-dir", dir, "-mode", "worker", "-id", strconv.Itoa(id)))
		}
		c := startProc(t, nil, bin, "-dir", dir, "-mode", "client", "-jobs", strconv.Itoa(jobs), "-workers", "3")
		c.mustExit(t)
		checkClient(t, c.out.String(), jobs)
		total := 0
		for i, w := range workers {
			w.mustExit(t) // each took exactly one of the three "stop" jobs
			n, k := workerJobs(t, w.out.String())
			if n != 1 || !strings.Contains(w.out.String(), fmt.Sprintf("worker %d:", i+1)) {
				t.Errorf("worker %d printed %q", i+1, w.out.String())
			}
			total += k
		}
		if total != jobs {
			t.Errorf("workers report %d jobs done, want %d", total, jobs)
		}
		// Jobs, replies and stops, each published once.
		if m, err := stat(dir, "messages"); err != nil || m != 2*jobs+3 {
			t.Errorf("stats messages %d (%v), want %d", m, err, 2*jobs+3)
		}
	})
}

func TestExampleWalkthrough(t *testing.T) {
	a := startAgent(t)
	script, err := filepath.Abs("../../examples/shell/walkthrough.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"", "other"} {
		name := ns
		if name == "" {
			name = "default-namespace"
		}
		t.Run(name, func(t *testing.T) {
			out := shRun(t, fmt.Sprintf("sh %s %s %s", script, a.mount, ns))
			for _, want := range []string{"passthrough ", "messages 4\n", "a reader took: job-1\n", "walkthrough ok\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("walkthrough output lacks %q:\n%s", want, out)
				}
			}
			if ns == "" {
				ns = "demo"
			}
			// It cleans up after itself, so it can run again.
			if _, err := os.Stat(filepath.Join(a.mount, ns)); !os.IsNotExist(err) {
				t.Errorf("walkthrough left %s behind: %v", ns, err)
			}
		})
	}
	// It refuses a directory that is not a mount.
	cmd := exec.Command("sh", script, t.TempDir())
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "is not a mount point") {
		t.Errorf("walkthrough on a plain directory: %v, %q", err, b)
	}
}

// TestExamplePipeline runs the image pipeline as host processes
// (examples/pipeline/host.sh: a camera, three workers on a stream channel,
// a sink on a pubsub channel): every frame arrives once, intact, and the
// script removes its channels.
func TestExamplePipeline(t *testing.T) {
	a := startAgent(t)
	script, err := filepath.Abs("../../examples/pipeline/host.sh")
	if err != nil {
		t.Fatal(err)
	}
	// Not shRun: host.sh builds the programs first, which takes a while
	// with a cold build cache on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", script, "500", "0", "3")
	cmd.Env = append(os.Environ(), "MOUNT="+a.mount, "NS=pipe")
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("host.sh: %v\n%s", err, out)
	}
	want := "report run=1 frames=500 received=500 duplicates=0 missing=0 checksum_failures=0 "
	if !strings.Contains(out, want) || !strings.Contains(out, " workers=3\n") {
		t.Errorf("host.sh printed:\n%s\nwant %q and workers=3", out, want)
	}
	if _, err := os.Stat(filepath.Join(a.mount, "pipe")); !os.IsNotExist(err) {
		t.Errorf("host.sh left its namespace behind: %v", err)
	}
}
