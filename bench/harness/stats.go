package harness

import (
	"errors"
	"math"
	"slices"
)

// ErrCorrupt marks a payload that failed its check.
var ErrCorrupt = errors.New("corrupt payload")

// Latency summarizes one-way latencies in nanoseconds.
type Latency struct {
	N      int     `json:"n"`
	MeanNs float64 `json:"mean_ns"`
	P50Ns  int64   `json:"p50_ns"`
	P99Ns  int64   `json:"p99_ns"`
	P999Ns int64   `json:"p999_ns"`
	MaxNs  int64   `json:"max_ns"`
}

// Summarize sorts samples in place and returns their summary; the zero
// Latency for no samples.
func Summarize(samples []int64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return Latency{
		N:      len(samples),
		MeanNs: sum / float64(len(samples)),
		P50Ns:  Percentile(samples, 50),
		P99Ns:  Percentile(samples, 99),
		P999Ns: Percentile(samples, 99.9),
		MaxNs:  samples[len(samples)-1],
	}
}

// Percentile returns the p-th percentile of sorted samples by the
// nearest-rank method: the smallest sample with at least p% of the samples
// at or below it. It never interpolates, so the answer is a latency that
// was measured. p is clamped to [0, 100]; no samples give 0.
func Percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	p = max(0, min(100, p))
	// The small epsilon keeps p*n that are whole in decimal (99.9% of
	// 1000) from rounding up a rank through binary error.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// Merge concatenates sample sets (one per subscriber) for a joint summary.
func Merge(sets ...[]int64) []int64 {
	n := 0
	for _, s := range sets {
		n += len(s)
	}
	out := make([]int64, 0, n)
	for _, s := range sets {
		out = append(out, s...)
	}
	return out
}
