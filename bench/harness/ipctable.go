package harness

import (
	"fmt"
	"slices"
	"strings"
)

// ipcTable compares Shimmy through mmap with the local IPC peers, one row
// per figure a user of one host looks at: throughput, and latency at the
// fixed rate with a sleeping and with a busy-polling subscriber. The last
// column is Shimmy against the best peer of the row (above 1: Shimmy is
// better).
func (rep *Report) ipcTable(subs int) string {
	type row struct {
		label   string
		mode    string
		busy    bool
		latency bool
	}
	rows := []row{
		{"throughput, sleeping subscribers", "throughput", false, false},
		{"throughput, busy subscribers", "throughput", true, false},
		{"fixed rate, sleeping subscribers, p50 / p99", "latency", false, true},
		{"fixed rate, busy subscribers, p50 / p99", "latency", true, true},
	}
	cols := func(busy bool) []string {
		if busy {
			return []string{SysShimmyBusy, SysIceoryxBusy, SysMQBusy, SysZMQBusy}
		}
		return []string{SysShimmyZeroCopy, SysIceoryx, SysMQ, SysZMQ}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Shimmy against local IPC, %d subscriber(s)\n\n", subs)
	b.WriteString("Shimmy's zero-copy ring (`shimmy-mmap-zerocopy`, busy: `shimmy-mmap-busy`) against iceoryx, POSIX message queues and ZeroMQ over ipc://, " +
		"the same subscriber kind in every column (sleeping: blocked in the library's wait; busy: polling). " +
		"vs best peer: Shimmy msgs/s ÷ the best peer's, or the best peer's p50 ÷ Shimmy's; above 1: Shimmy is better. `n/a`: no valid figure.\n\n")
	b.WriteString("| size | figure | Shimmy | iceoryx | POSIX mq | ZeroMQ ipc | vs best peer |\n|---|---|---:|---:|---:|---:|---:|\n")
	_, tsizes, _ := rep.pick(figure{mode: "throughput", subs: subs, value: func(Result) float64 { return 0 }})
	_, lsizes, _ := rep.pick(figure{mode: "latency", subs: subs, value: func(Result) float64 { return 0 }})
	for _, size := range unionSorted(tsizes, lsizes) {
		for _, rw := range rows {
			_, _, v := rep.pick(figure{mode: rw.mode, subs: subs, value: func(r Result) float64 { return r.MsgsPerSec }})
			_, _, p99 := rep.pick(figure{mode: rw.mode, subs: subs, value: func(r Result) float64 { return float64(r.Latency.P99Ns) }})
			if rw.latency {
				_, _, v = rep.pick(figure{mode: rw.mode, subs: subs, value: func(r Result) float64 { return float64(r.Latency.P50Ns) }})
			}
			fmt.Fprintf(&b, "| %s | %s |", sizeName(size), rw.label)
			best := 0.0
			for i, sys := range cols(rw.busy) {
				x, ok := v[sys][size]
				switch {
				case !ok || x <= 0:
					b.WriteString(" n/a |")
					continue
				case rw.latency:
					fmt.Fprintf(&b, " %s / %s |", durFmt(x), durFmt(p99[sys][size]))
				default:
					fmt.Fprintf(&b, " %s/s |", siFmt(x))
				}
				if i > 0 && (best == 0 || rw.latency && x < best || !rw.latency && x > best) {
					best = x
				}
			}
			ratio := "n/a"
			if me := v[cols(rw.busy)[0]][size]; me > 0 && best > 0 {
				if rw.latency {
					ratio = fmt.Sprintf("%.3g×", best/me)
				} else {
					ratio = fmt.Sprintf("%.3g×", me/best)
				}
			}
			fmt.Fprintf(&b, " %s |\n", ratio)
		}
	}
	return b.String()
}

func unionSorted(a, b []int) []int {
	out := append([]int(nil), a...)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}
