package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/fs"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

func TestPercentile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1) // 1..100
	}
	thousand := make([]int64, 1000)
	for i := range thousand {
		thousand[i] = int64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []int64
		p      float64
		want   int64
	}{
		{"empty", nil, 50, 0},
		{"one", []int64{7}, 99.9, 7},
		{"p0 is the minimum", hundred, 0, 1},
		{"median of 100", hundred, 50, 50},
		{"p99 of 100", hundred, 99, 99},
		{"p99.9 of 100 is the maximum", hundred, 99.9, 100},
		{"p100", hundred, 100, 100},
		{"p99.9 of 1000", thousand, 99.9, 999},
		{"p50 of 1000", thousand, 50, 500},
		{"above 100 clamps", hundred, 150, 100},
		{"median of two is the lower", []int64{10, 20}, 50, 10},
		{"p51 of two is the upper", []int64{10, 20}, 51, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(p=%v) = %d, want %d", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	if got := Summarize(nil); got != (Latency{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
	s := []int64{5, 1, 4, 2, 3} // unsorted on purpose
	got := Summarize(s)
	want := Latency{N: 5, MeanNs: 3, P50Ns: 3, P99Ns: 5, P999Ns: 5, MaxNs: 5}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	m := Merge([]int64{1, 2}, nil, []int64{3})
	if len(m) != 3 || m[0] != 1 || m[2] != 3 {
		t.Errorf("Merge = %v", m)
	}
}

func TestCodec(t *testing.T) {
	for _, size := range []int{16, 17, 31, 32, 33, 4096, 100_000} {
		c, err := NewCodec(size)
		if err != nil {
			t.Fatal(err)
		}
		// Encode into garbage (a reused ring frame) and Stamp into a
		// template must give the same bytes.
		a := make([]byte, size)
		for i := range a {
			a[i] = 0xa5
		}
		c.Encode(a, 12345, 987654321)
		b := c.Template()
		c.Stamp(b, 12345, 987654321)
		if string(a) != string(b) {
			t.Fatalf("size %d: Encode and Template+Stamp differ", size)
		}
		seq, ts, err := c.Verify(a)
		if err != nil || seq != 12345 || ts != 987654321 {
			t.Fatalf("size %d: Verify = %d, %d, %v", size, seq, ts, err)
		}
		// Every single-byte change is caught, wherever it is.
		for _, off := range []int{0, 3, 4, 7, 8, 15, size / 2, size - 1} {
			if off >= size {
				continue
			}
			bad := append([]byte(nil), a...)
			bad[off] ^= 0x40
			if _, _, err := c.Verify(bad); err == nil {
				t.Errorf("size %d: byte %d flipped, Verify passed", size, off)
			}
		}
		// A stale message with a fresh header (a torn read) is caught.
		old := c.Template()
		c.Stamp(old, 1, 1)
		if size >= 32 {
			torn := append([]byte(nil), old...)
			copy(torn[:hdrLen], a[:hdrLen])
			if _, _, err := c.Verify(torn); err == nil {
				t.Errorf("size %d: header of 12345 over body of 1 passed", size)
			}
		}
		if _, _, err := c.Verify(a[:size-1]); err == nil {
			t.Errorf("size %d: a truncated payload passed", size)
		}
	}
	if _, err := NewCodec(MinSize - 1); err == nil {
		t.Error("NewCodec below the minimum size succeeded")
	}
}

func TestFillStatus(t *testing.T) {
	c := Case{Mode: "throughput", Size: 16, Count: 100, Subs: 2}
	tests := []struct {
		name string
		pub  childResult
		subs []childResult
		want string
	}{
		{"all arrived", childResult{Sent: 100}, []childResult{{Received: 100}, {Received: 100}}, StatusOK},
		{"capped", childResult{Sent: 60}, []childResult{{Received: 60}, {Received: 60}}, StatusPartial},
		{"one subscriber lost some", childResult{Sent: 100}, []childResult{{Received: 100}, {Received: 97}}, StatusLost},
		{"gap", childResult{Sent: 100}, []childResult{{Received: 100}, {Received: 100, Gaps: 1}}, StatusCorrupt},
		{"bad check", childResult{Sent: 100}, []childResult{{Received: 100, Corrupt: 1}, {Received: 100}}, StatusCorrupt},
		{"reordered", childResult{Sent: 100}, []childResult{{Received: 100, Reordered: 2}, {Received: 100}}, StatusCorrupt},
		{"nothing sent", childResult{Err: "boom"}, []childResult{{}, {}}, StatusError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Result{System: "x", Case: c}
			for i := range tc.subs {
				tc.subs[i].FirstSendNs, tc.subs[i].LastRecvNs = 1000, 1000+int64(time.Millisecond)
			}
			r.fill(tc.pub, tc.subs, [][]int64{{1, 2}, {3}}, 10, 0)
			if r.Status != tc.want {
				t.Errorf("status %q, want %q (note %q)", r.Status, tc.want, r.Note)
			}
			if r.Valid() != (tc.want == StatusOK || tc.want == StatusPartial) {
				t.Errorf("Valid() = %v for %s", r.Valid(), r.Status)
			}
			if r.Latency.N != 3 {
				t.Errorf("latency over %d samples, want 3", r.Latency.N)
			}
		})
	}
}

// TestEndToEnd runs one tiny case per system, each client in a process of
// its own (this test binary, re-executed), and checks that every message
// arrived intact.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no child processes")
	}
	for _, sys := range systems {
		if sys.remote {
			continue // TestRemoteEndToEnd
		}
		t.Run(sys.name, func(t *testing.T) {
			opts := Options{}
			if sys.name == SysShimmyFiles {
				testenv.NeedFUSE(t) // the data-file case mounts an agent
				opts.Agent = InProcessAgent(fs.FrontEnd(fs.MountOptions{AllowOther: true}))
			}
			if sys.peer != nil {
				if err := sys.peer.missing(); err != nil {
					t.Skipf("%s: %v", sys.name, err)
				}
			}
			if sys.pkg != "" {
				if _, err := findBinary(sys.pkg); err != nil {
					t.Skipf("%s is not installed (apt-get install -y %s, or make bench-deps)", sys.pkg, sys.pkg)
				}
			}
			for _, c := range []Case{
				{Mode: "throughput", Size: 100, Count: 300, Subs: 2},
				{Mode: "latency", Size: 16, Count: 50, Subs: 1, Rate: 2000},
			} {
				checkTinyRun(t, sys, c, t.TempDir(), nil, opts)
			}
		})
	}
}

// checkTinyRun runs one case of sys and checks that every message arrived
// intact, counted end to end, with plausible figures.
func checkTinyRun(t *testing.T, sys system, c Case, tmp string, rh *remote, opts Options) {
	t.Helper()
	var lines []string
	rs := runSystem(context.Background(), sys, []Case{c}, 30*time.Second, tmp, rh, opts,
		func(f string, a ...any) { lines = append(lines, strings.TrimSpace(fmt.Sprintf(f, a...))) })
	if len(rs) != 1 {
		t.Fatalf("%d results: %v", len(rs), lines)
	}
	r := rs[0]
	if r.Status != StatusOK || r.Received != c.Count || r.Sent != c.Count || r.Corrupt != 0 {
		t.Fatalf("%s: %s, sent %d, received %d, %d corrupt: %s", c, r.Status, r.Sent, r.Received, r.Corrupt, r.Note)
	}
	// Every message is timed at a fixed rate; at saturation every 16th by
	// sequence, and the last.
	every := clockEvery(c)
	timed := (c.Count+every-1)/every + min(1, (c.Count-1)%every)
	if r.Latency.N != timed*c.Subs || r.Latency.P50Ns <= 0 || r.MsgsPerSec <= 0 || r.CPUPubNs <= 0 {
		t.Errorf("%s: implausible figures %+v", c, r)
	}
	// A short throughput case is run three times and its median run
	// reported.
	if c.Mode == "throughput" && r.Elapsed < repeatBelow.Seconds() {
		if len(r.Runs) != repeats || !sort.Float64sAreSorted(r.Runs) || r.MsgsPerSec != r.Runs[repeats/2] {
			t.Errorf("%s: runs %v, reported %v: want %d sorted runs and their median", c, r.Runs, r.MsgsPerSec, repeats)
		}
	}
	if sys.broker && r.CPUServerNs <= 0 {
		t.Errorf("%s: no server CPU time measured", c)
	}
	if sys.name == SysMirror && r.CPUAgentNs <= 0 {
		t.Errorf("%s: no agent CPU time measured", c)
	}
	t.Log(r.progressLine())
}

// TestRunWritesOutputs runs Run on the kernel baselines with a tiny plan
// and checks every output file is there.
func TestReportOutputs(t *testing.T) {
	dir := t.TempDir()
	rep := &Report{Started: time.Now(), Finished: time.Now(), Machine: machineInfo(), CaseCap: "1s"}
	c := Case{Mode: "throughput", Size: 16, Count: 10, Subs: 1}
	for _, sys := range []string{SysShimmyZeroCopy, SysNATS} {
		for _, size := range []int{16, 100_000} {
			c.Size = size
			r := Result{System: sys, Case: c}
			r.fill(childResult{Sent: 10}, []childResult{{Received: 10, TimedN: 10, FirstSendNs: 1, LastRecvNs: 1 + 1e6}}, [][]int64{{1000, 2000}}, 5, 0)
			rep.Results = append(rep.Results, r)
			l := r
			l.Mode, l.Rate = "latency", 1000
			rep.Results = append(rep.Results, l)
		}
	}
	rep.Results = append(rep.Results, Result{System: SysKafka, Status: StatusPaper, Note: "not packaged"})
	if err := rep.write(dir); err != nil {
		t.Fatal(err)
	}
	// Plots are drawn from results.json, as `shimmy-bench --replot` does.
	if err := Replot(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.md", "results.csv", "results.json", "throughput-msgs-1sub.png", "latency-p50-1sub.png", "cpu-1sub.png"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"| shimmy-mmap-zerocopy | 16B |", "kafka", "Ratios"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
}

func TestScaledFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{siFmt(999), "999"},
		{siFmt(1000), "1k"},
		{siFmt(1234567), "1.23M"},
		{siFmt(4.5e9), "4.5G"},
		{durFmt(12), "12ns"},
		{durFmt(1500), "1.5µs"},
		{durFmt(250e6), "250ms"},
		{durFmt(2e9), "2s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestMedianRounds: interleaved rounds merge into one row per system and
// case, the median round's, unless a round was not valid.
func TestMedianRounds(t *testing.T) {
	thr := Case{Mode: "throughput", Size: 16, Count: 10, Subs: 1}
	lat := Case{Mode: "latency", Size: 16, Count: 10, Subs: 1, Rate: 100}
	ok := func(c Case, v float64) Result {
		return Result{System: "a", Case: c, Status: StatusOK, MsgsPerSec: v, Latency: Latency{P50Ns: int64(v)}}
	}
	lost := ok(thr, 9)
	lost.Status = StatusLost
	for _, tc := range []struct {
		name   string
		in     []Result
		want   float64 // the reported round's figure
		status string
	}{
		{"throughput median", []Result{ok(thr, 3), ok(thr, 1), ok(thr, 2)}, 2, StatusOK},
		{"latency median", []Result{ok(lat, 30), ok(lat, 10), ok(lat, 20)}, 20, StatusOK},
		{"a lost round wins", []Result{ok(thr, 3), lost, ok(thr, 2)}, 9, StatusLost},
		{"one round as is", []Result{ok(thr, 5)}, 5, StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := medianRounds(tc.in)
			if len(out) != 1 {
				t.Fatalf("%d results, want 1", len(out))
			}
			if out[0].MsgsPerSec != tc.want || out[0].Status != tc.status {
				t.Errorf("got %v %s (%s), want %v %s", out[0].MsgsPerSec, out[0].Status, out[0].Note, tc.want, tc.status)
			}
		})
	}
	// Two systems and two cases stay apart, in first-seen order.
	b := ok(thr, 7)
	b.System = "b"
	out := medianRounds([]Result{ok(thr, 1), ok(lat, 2), b, ok(thr, 3), ok(lat, 4), b})
	if len(out) != 3 || out[0].System != "a" || out[0].Mode != "throughput" || out[1].Mode != "latency" || out[2].System != "b" {
		t.Errorf("merged %+v", out)
	}
}

// TestIPCTable: the local IPC comparison shows each peer's figure and
// Shimmy against the best peer of the row.
func TestIPCTable(t *testing.T) {
	res := func(sys, mode string, v float64, p50 int64) Result {
		return Result{System: sys, Case: Case{Mode: mode, Size: 16, Count: 10, Subs: 1}, Status: StatusOK, Sent: 10,
			MsgsPerSec: v, Latency: Latency{P50Ns: p50, P99Ns: 2 * p50}}
	}
	rep := &Report{Results: []Result{
		res(SysShimmyZeroCopy, "throughput", 8e6, 0), res(SysIceoryx, "throughput", 1e6, 0), res(SysZMQ, "throughput", 2e6, 0),
		res(SysShimmyZeroCopy, "latency", 5000, 10_000), res(SysIceoryx, "latency", 5000, 15_000), res(SysMQ, "latency", 5000, 12_000),
	}}
	md := rep.Markdown()
	for _, want := range []string{
		"| 16B | throughput, sleeping subscribers | 8M/s | 1M/s | n/a | 2M/s | 4× |",
		"| 16B | fixed rate, sleeping subscribers, p50 / p99 | 10µs / 20µs | 15µs / 30µs | 12µs / 24µs | n/a | 1.2× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}
