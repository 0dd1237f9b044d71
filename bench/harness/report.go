package harness

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Statuses of a result.
const (
	StatusOK      = "ok"      // every message arrived, intact and in order
	StatusPartial = "partial" // capped by time: fewer sent than planned, all of them arrived intact
	StatusLost    = "LOST"    // some sent messages never arrived
	StatusCorrupt = "CORRUPT" // a message failed its check, or came out of order
	StatusError   = "error"   // the case did not run to the end
	StatusSkipped = "skipped" // the system is not available here
	StatusPaper   = "paper"   // not run: the paper's figures, where known
)

// Result is one system's figures for one case. Throughput is per
// subscriber: with 4 subscribers each receives every message, so 4 times
// as many are delivered.
type Result struct {
	System string `json:"system"`
	Case
	Status   string  `json:"status"`
	Note     string  `json:"note,omitempty"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"` // by the subscriber that got the fewest
	Lost     int     `json:"lost"`     // sent minus received, summed over subscribers
	Corrupt  int     `json:"corrupt"`  // failed checks, gaps and reorders, summed
	Elapsed  float64 `json:"elapsed_s"`
	// At the subscriber: messages (and megabytes, 10^6) per second from
	// the first message's send time to the last one's arrival, at the
	// slowest subscriber.
	MsgsPerSec float64 `json:"msgs_per_s"`
	MBPerSec   float64 `json:"mb_per_s"`
	// Runs holds every run's msgs/s of a case that was repeated (the
	// figures above are the median run's).
	Runs []float64 `json:"runs_msgs_per_s,omitempty"`
	// Offered rate achieved by the publisher (fixed-rate cases).
	AchievedRate float64 `json:"achieved_rate,omitempty"`
	Latency      Latency `json:"latency"`
	// CPU time in nanoseconds, per process kind and in all, and per
	// message sent.
	CPUPubNs    int64   `json:"cpu_pub_ns"`
	CPUSubsNs   int64   `json:"cpu_subs_ns"`
	CPUServerNs int64   `json:"cpu_server_ns"`
	CPUAgentNs  int64   `json:"cpu_agent_ns"`
	CPUTotalNs  int64   `json:"cpu_total_ns"`
	CPUPerMsgNs float64 `json:"cpu_per_msg_ns"`
}

// fill derives the figures from what the children reported.
func (r *Result) fill(pub childResult, subs []childResult, samples [][]int64, serverNs, agentNs int64) {
	r.Sent = pub.Sent
	r.CPUPubNs = pub.CPUNs
	r.CPUServerNs = serverNs
	r.CPUAgentNs = agentNs
	var errs []string
	if pub.Err != "" {
		errs = append(errs, "publisher: "+pub.Err)
	}
	r.Received = -1
	timed := -1 // the slowest subscriber's messages up to its last timed one
	var first, last int64
	for i, s := range subs {
		if r.Received < 0 || s.Received < r.Received {
			r.Received = s.Received
		}
		r.Lost += max(0, pub.Sent-s.Received)
		r.Corrupt += s.Corrupt + s.Gaps + s.Reordered
		r.CPUSubsNs += s.CPUNs
		if timed < 0 || s.TimedN < timed {
			timed = s.TimedN
		}
		if s.Received > 0 {
			if first == 0 || s.FirstSendNs < first {
				first = s.FirstSendNs
			}
			last = max(last, s.LastRecvNs)
		}
		if s.Err != "" {
			errs = append(errs, fmt.Sprintf("subscriber %d: %s", i, s.Err))
		}
		if s.FirstErr != "" {
			errs = append(errs, fmt.Sprintf("subscriber %d: %s", i, s.FirstErr))
		}
	}
	if r.Received < 0 {
		r.Received = 0
	}
	r.CPUTotalNs = r.CPUPubNs + r.CPUSubsNs + r.CPUServerNs + r.CPUAgentNs
	if r.Sent > 0 {
		r.CPUPerMsgNs = float64(r.CPUTotalNs) / float64(r.Sent)
	}
	if last > first && timed > 0 {
		r.Elapsed = float64(last-first) / 1e9
		r.MsgsPerSec = float64(timed) / r.Elapsed
		r.MBPerSec = r.MsgsPerSec * float64(r.Size) / 1e6
	}
	if r.Rate > 0 && pub.EndNs > pub.StartNs && r.Sent > 1 {
		r.AchievedRate = float64(r.Sent) / (float64(pub.EndNs-pub.StartNs) / 1e9)
	}
	r.Latency = Summarize(Merge(samples...))
	switch {
	case r.Corrupt > 0:
		r.Status = StatusCorrupt
	case r.Lost > 0:
		r.Status = StatusLost
	case pub.Err != "" || r.Sent == 0:
		r.Status = StatusError
	case r.Sent < r.Count:
		r.Status = StatusPartial
	default:
		r.Status = StatusOK
	}
	if r.Status == StatusPartial {
		errs = append([]string{fmt.Sprintf("capped by time: %d of %d sent", r.Sent, r.Count)}, errs...)
	}
	if r.Rate > 0 && r.AchievedRate > 0 && r.AchievedRate < 0.9*r.Rate {
		errs = append(errs, fmt.Sprintf("offered rate not sustained: %.0f/s", r.AchievedRate))
	}
	r.Note = strings.Join(errs, "; ")
}

// Valid reports whether the figures may be compared: every sent message
// arrived intact.
func (r Result) Valid() bool { return r.Status == StatusOK || r.Status == StatusPartial }

func (r Result) progressLine() string {
	s := fmt.Sprintf("%-22s %-58s %-8s", r.System, r.Case.String(), r.Status)
	if r.Sent > 0 {
		s += fmt.Sprintf(" %s msgs/s %s MB/s  lat p50 %s p99 %s  cpu %s/msg  (%d/%d recv)",
			siFmt(r.MsgsPerSec), siFmt(r.MBPerSec), durFmt(float64(r.Latency.P50Ns)), durFmt(float64(r.Latency.P99Ns)),
			durFmt(r.CPUPerMsgNs), r.Received, r.Sent)
	}
	if r.Note != "" {
		s += "  [" + r.Note + "]"
	}
	return s
}

// siFmt prints a rate with three significant digits and a k/M/G suffix.
func siFmt(v float64) string { return scaled(v, [4]string{"G", "M", "k", ""}) }

// durFmt prints nanoseconds as ns, µs, ms or s with three significant digits.
func durFmt(ns float64) string { return scaled(ns, [4]string{"s", "ms", "µs", "ns"}) }

// scaled prints v with three significant digits in the largest of the
// units (for 1e9, 1e6, 1e3 and 1) that keeps it at least 1.
func scaled(v float64, units [4]string) string {
	for i, scale := range []float64{1e9, 1e6, 1e3} {
		if v >= scale {
			return fmt.Sprintf("%.3g%s", v/scale, units[i])
		}
	}
	return fmt.Sprintf("%.3g%s", v, units[3])
}

// Report is a whole run.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Quick    bool      `json:"quick"`
	Remote   bool      `json:"remote,omitempty"` // the remote cases: publisher and subscriber on two hosts
	CaseCap  string    `json:"case_cap"`
	Rounds   int       `json:"rounds,omitempty"` // interleaved rounds, each case's median reported
	// /proc/loadavg before and after: the machine may be shared.
	LoadStart string   `json:"load_start"`
	LoadEnd   string   `json:"load_end"`
	Machine   Machine  `json:"machine"`
	Notes     []string `json:"notes,omitempty"`
	Results   []Result `json:"results"`
}

func goVersion() string { return runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH }

func (rep *Report) write(dir string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	if err := rep.writeCSV(filepath.Join(dir, "results.csv")); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.Markdown()), 0o644)
}

func (rep *Report) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"system", "mode", "size", "count", "subs", "rate", "status", "sent", "received", "lost", "corrupt",
		"elapsed_s", "msgs_per_s", "mb_per_s", "achieved_rate", "lat_n", "lat_mean_ns", "lat_p50_ns", "lat_p99_ns", "lat_p999_ns", "lat_max_ns",
		"cpu_pub_ns", "cpu_subs_ns", "cpu_server_ns", "cpu_agent_ns", "cpu_total_ns", "cpu_per_msg_ns", "note"})
	ff := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	it := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, r := range rep.Results {
		w.Write([]string{r.System, r.Mode, strconv.Itoa(r.Size), strconv.Itoa(r.Count), strconv.Itoa(r.Subs), ff(r.Rate), r.Status,
			strconv.Itoa(r.Sent), strconv.Itoa(r.Received), strconv.Itoa(r.Lost), strconv.Itoa(r.Corrupt),
			ff(r.Elapsed), ff(r.MsgsPerSec), ff(r.MBPerSec), ff(r.AchievedRate), strconv.Itoa(r.Latency.N), ff(r.Latency.MeanNs),
			it(r.Latency.P50Ns), it(r.Latency.P99Ns), it(r.Latency.P999Ns), it(r.Latency.MaxNs),
			it(r.CPUPubNs), it(r.CPUSubsNs), it(r.CPUServerNs), it(r.CPUAgentNs), it(r.CPUTotalNs), ff(r.CPUPerMsgNs), r.Note})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Markdown renders the results as tables: saturation, then fixed rate.
func (rep *Report) Markdown() string {
	var b strings.Builder
	mode := "full"
	if rep.Quick {
		mode = "quick"
	}
	if rep.Remote {
		mode += " remote"
	}
	fmt.Fprintf(&b, "# Shimmy benchmark results (%s run)\n\n", mode)
	if rep.Remote {
		b.WriteString("Remote cases: the publisher on host a, the subscriber on host b, two network namespaces joined by veth through a bridge on this machine; " +
			"brokers run on host a, beside the publisher; shimmy-mirror is two shimmy agents, one per host, mirroring the channel over mutual TLS.\n\n")
	}
	m := rep.Machine
	fmt.Fprintf(&b, "Run %s, took %s. Machine: %s, %d cores, Linux %s, %s.\n", rep.Started.Format("2006-01-02 15:04 MST"),
		rep.Finished.Sub(rep.Started).Round(time.Second), m.CPU, m.Cores, m.Kernel, m.Go)
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) at the start: %s; at the end: %s. Other work on the machine skews the figures.\n", rep.LoadStart, rep.LoadEnd)
	fmt.Fprintf(&b, "Servers: mosquitto %q, nats-server %q, redis-server %q.\n\n", m.Servers["mosquitto"], m.Servers["nats-server"], m.Servers["redis-server"])
	fmt.Fprintf(&b, "Every case is capped at %s (fixed-rate cases at 1.5 times their planned duration): a capped case is `partial` and its figures cover what was sent. "+
		"Throughput is at each subscriber (the slowest), MB = 10^6 bytes. Latency is one-way, send stamp to arrival, CLOCK_MONOTONIC. "+
		"CPU/msg is the CPU time of every process involved (publisher, subscribers, broker or agent) per message sent. "+
		"`LOST`/`CORRUPT` rows are not comparable figures.\n\n", rep.CaseCap)
	if rep.Rounds > 1 {
		fmt.Fprintf(&b, "Every system ran %d times, interleaved (all systems, then all again); each row is the case's median round, every round's figure in its note.\n\n", rep.Rounds)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(rep.Notes) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("## Throughput at saturation\n\nLatency here includes queueing behind the flow-control window; see the fixed-rate table for latency below saturation.\n\n")
	b.WriteString("| system | size | count | subs | status | msgs/s | MB/s | lat p50 | lat p99 | CPU/msg | note |\n|---|---|---|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.Results {
		if r.Mode != "throughput" {
			continue
		}
		if r.Status == StatusSkipped || r.Status == StatusPaper {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.System, sizeName(r.Size), countName(r.Count), r.Subs, r.Status,
			siFmt(r.MsgsPerSec), siFmt(r.MBPerSec), durFmt(float64(r.Latency.P50Ns)), durFmt(float64(r.Latency.P99Ns)), durFmt(r.CPUPerMsgNs), mdEscape(r.Note))
	}
	b.WriteString("\n## One-way latency at a fixed offered rate (below saturation)\n\n")
	b.WriteString("| system | size | subs | rate | status | mean | p50 | p99 | p99.9 | CPU/msg | note |\n|---|---|---|---:|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.Results {
		if r.Mode != "latency" || r.Status == StatusSkipped {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %.0f/s | %s | %s | %s | %s | %s | %s | %s |\n", r.System, sizeName(r.Size), r.Subs, r.Rate, r.Status,
			durFmt(r.Latency.MeanNs), durFmt(float64(r.Latency.P50Ns)), durFmt(float64(r.Latency.P99Ns)), durFmt(float64(r.Latency.P999Ns)), durFmt(r.CPUPerMsgNs), mdEscape(r.Note))
	}
	for _, subs := range []int{1, 4} {
		if rep.has(SysIceoryx, SysIceoryxBusy, SysMQ, SysMQBusy, SysZMQ, SysZMQBusy) {
			b.WriteString(rep.ipcTable(subs))
		}
	}
	b.WriteString(rep.ratios())
	b.WriteString("\n## Not run\n\n")
	seen := map[string]bool{}
	for _, r := range rep.Results {
		if (r.Status == StatusSkipped || r.Status == StatusPaper) && !seen[r.System] {
			seen[r.System] = true
			fmt.Fprintf(&b, "- **%s**: %s\n", r.System, mdEscape(r.Note))
		}
	}
	if len(seen) == 0 {
		b.WriteString("- none\n")
	}
	return b.String()
}

// has reports whether the report holds a result of one of systems.
func (rep *Report) has(systems ...string) bool {
	for _, r := range rep.Results {
		if slices.Contains(systems, r.System) {
			return true
		}
	}
	return false
}

func mdEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}

// ratios compares Shimmy through mmap with every other system, one
// subscriber: throughput at saturation (the valid case with the most
// messages) and median latency at the fixed rate. One table per Shimmy
// reference: the sleeping subscriber and the busy-polling one.
func (rep *Report) ratios() string {
	var b strings.Builder
	for _, ref := range []string{SysShimmyZeroCopy, SysShimmyBusy, SysMirror} {
		if rep.has(ref) {
			b.WriteString(rep.ratioTable(ref))
		}
	}
	return b.String()
}

func (rep *Report) ratioTable(ref string) string {
	var b strings.Builder
	b.WriteString("\n## Ratios: " + ref + " against each system (1 subscriber)\n\n")
	b.WriteString("Throughput ratio = Shimmy msgs/s ÷ system msgs/s; latency ratio = system median ÷ Shimmy median. Above 1: Shimmy is better. `n/a`: no valid figure.\n\n")
	tf := figure{mode: "throughput", subs: 1, value: func(r Result) float64 { return r.MsgsPerSec }}
	lf := figure{mode: "latency", subs: 1, value: func(r Result) float64 { return float64(r.Latency.P50Ns) }}
	tsys, tsizes, tv := rep.pick(tf)
	_, lsizes, lv := rep.pick(lf)
	sizes := tsizes
	for _, s := range lsizes {
		if !slices.Contains(sizes, s) {
			sizes = append(sizes, s)
		}
	}
	slices.Sort(sizes)
	b.WriteString("| system |")
	for _, s := range sizes {
		fmt.Fprintf(&b, " throughput %s | median latency %s |", sizeName(s), sizeName(s))
	}
	b.WriteString("\n|---|")
	for range sizes {
		b.WriteString("---:|---:|")
	}
	b.WriteString("\n")
	ratio := func(num, den float64) string {
		if num <= 0 || den <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.3g×", num/den)
	}
	for _, sys := range tsys {
		if sys == ref {
			continue
		}
		fmt.Fprintf(&b, "| %s |", sys)
		for _, s := range sizes {
			fmt.Fprintf(&b, " %s | %s |", ratio(tv[ref][s], tv[sys][s]), ratio(lv[sys][s], lv[ref][s]))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
