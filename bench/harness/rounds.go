package harness

import (
	"fmt"
	"sort"
	"strings"
)

// medianRounds merges the results of interleaved rounds: one result per
// system and case, in first-seen order, the median round by msgs/s
// (throughput) or by median latency (fixed rate), with every round's
// figure in the note. A round that lost or corrupted messages, or failed,
// is reported instead: no better round hides it.
func medianRounds(all []Result) []Result {
	type key struct {
		sys string
		c   Case
	}
	var order []key
	byKey := map[key][]Result{}
	for _, r := range all {
		k := key{r.System, r.Case}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	out := make([]Result, 0, len(order))
	for _, k := range order {
		out = append(out, medianRound(byKey[k]))
	}
	return out
}

func medianRound(rs []Result) Result {
	if len(rs) == 1 {
		return rs[0]
	}
	for i, r := range rs {
		if !r.Valid() {
			if r.Status != StatusSkipped && r.Status != StatusPaper {
				r.Note = strings.TrimSpace(fmt.Sprintf("round %d of %d: %s", i+1, len(rs), r.Note))
			}
			return r
		}
	}
	value := func(r Result) float64 { return r.MsgsPerSec }
	format := func(r Result) string { return siFmt(r.MsgsPerSec) }
	what := "msgs/s"
	if rs[0].Mode == "latency" {
		value = func(r Result) float64 { return float64(r.Latency.P50Ns) }
		format = func(r Result) string {
			return durFmt(float64(r.Latency.P50Ns)) + " / " + durFmt(float64(r.Latency.P99Ns))
		}
		what = "p50 / p99"
	}
	sorted := append([]Result(nil), rs...)
	sort.SliceStable(sorted, func(i, j int) bool { return value(sorted[i]) < value(sorted[j]) })
	m := sorted[len(sorted)/2]
	var figs []string
	m.Runs = nil
	for _, r := range rs {
		figs = append(figs, format(r))
		if r.Mode == "throughput" {
			m.Runs = append(m.Runs, r.MsgsPerSec)
		}
	}
	note := fmt.Sprintf("median of %d interleaved rounds (%s: %s)", len(rs), what, strings.Join(figs, ", "))
	if m.Note != "" {
		note += "; round's " + m.Note
	}
	m.Note = note
	return m
}
