// Command sink is the end of the image pipeline (examples/pipeline): it
// subscribes to the results pubsub channel and keeps, per run, the frames
// received, duplicates, missing frames, checksum failures (a frame whose
// pixels did not match its CRC, or a malformed result), the end-to-end
// latency (camera's send to the sink's receipt, p50 and p99) and the frames
// per second (from the first frame sent to the last received). When a run
// is complete, or has made no progress for -stall, it prints one report
// line and publishes the same line on the control channel, where `cat
// $SHIMMY_CHANNEL_CONTROL/sub` shows it:
//
//	report run=1 frames=2000 received=2000 duplicates=0 missing=0 checksum_failures=0 fps=812 p50_us=410 p99_us=2210 workers=3
//
// then one line with how the frames were spread over the workers.
//
//	sink [-results DIR] [-control DIR] [-stall 10s]
//
// The directories default to $SHIMMY_CHANNEL_RESULTS and
// $SHIMMY_CHANNEL_CONTROL, which the admission webhook gives a pod.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/examples/pipeline/internal/vision"
)

func main() {
	results := flag.String("results", os.Getenv("SHIMMY_CHANNEL_RESULTS"), "the results channel's directory (default $SHIMMY_CHANNEL_RESULTS)")
	control := flag.String("control", os.Getenv("SHIMMY_CHANNEL_CONTROL"), "the control channel's directory (default $SHIMMY_CHANNEL_CONTROL)")
	stall := flag.Duration("stall", 10*time.Second, "report an incomplete run after this long without a new frame")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("sink: ")
	if *results == "" || *control == "" {
		log.Fatal("give the channels' directories with -results and -control (or $SHIMMY_CHANNEL_RESULTS, $SHIMMY_CHANNEL_CONTROL)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *results, *control, *stall); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// runStats is what the sink knows of one run.
type runStats struct {
	total      uint64
	seen       []bool
	received   uint64 // distinct frames
	duplicates uint64
	badFrames  uint64 // results saying the frame's checksum failed
	latencies  []int64
	firstSent  int64
	lastRecv   int64
	workers    map[string]int
	lastChange time.Time
	reported   bool
}

func run(ctx context.Context, resultsDir, controlDir string, stall time.Duration) error {
	rings, closeAll, err := vision.Open(resultsDir, controlDir)
	if err != nil {
		return err
	}
	defer closeAll()
	results, control := rings[0], rings[1]
	sub, err := results.NewSubscriber(channel.SubscriberOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer sub.Close()
	reports, err := control.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault})
	if err != nil {
		return err
	}
	defer reports.Close()
	log.Printf("subscribed to %s, reports to %s", resultsDir, controlDir)

	runs := map[uint32]*runStats{}
	var malformed uint64 // results that failed their checks: no run to count them in
	report := func(id uint32, r *runStats) error {
		r.reported = true
		line := r.report(id, malformed)
		fmt.Println(line)
		fmt.Println(r.spread(id))
		return reports.Publish(ctx, []byte(line+"\n"))
	}
	var msg []byte
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		msg, err = sub.Next(wctx, msg)
		cancel()
		now := time.Now()
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			// No result for a second: report runs that stalled.
			for id, r := range runs {
				if !r.reported && now.Sub(r.lastChange) > stall {
					if err := report(id, r); err != nil {
						return err
					}
				}
			}
			continue
		case err != nil:
			return err
		}
		if l := sub.Lost(); l > 0 {
			return fmt.Errorf("lost %d results: the results channel must use the block policy", l)
		}
		res, err := vision.ParseResult(msg)
		if err != nil {
			malformed++
			log.Print(err)
			continue
		}
		r := runs[res.Run]
		if r == nil || r.total != res.Total {
			if r != nil {
				log.Printf("run %d restarted with %d frames", res.Run, res.Total)
			}
			r = &runStats{total: res.Total, seen: make([]bool, res.Total), firstSent: res.Sent, workers: map[string]int{}}
			runs[res.Run] = r
		}
		if r.reported {
			log.Printf("run %d: frame %d arrived after the report (%s)", res.Run, res.Seq, map[bool]string{true: "duplicate", false: "late"}[r.seen[res.Seq]])
		}
		r.add(res, now)
		if !r.reported && r.received == r.total {
			if err := report(res.Run, r); err != nil {
				return err
			}
		}
	}
}

func (r *runStats) add(res vision.Result, now time.Time) {
	r.lastChange = now
	if r.seen[res.Seq] {
		r.duplicates++
		return
	}
	r.seen[res.Seq] = true
	r.received++
	if !res.FrameOK {
		r.badFrames++
	}
	r.workers[res.Worker]++
	recv := now.UnixNano()
	r.latencies = append(r.latencies, recv-res.Sent)
	r.firstSent = min(r.firstSent, res.Sent)
	r.lastRecv = max(r.lastRecv, recv)
}

// report is the run's report line (see the command's doc).
func (r *runStats) report(id uint32, malformed uint64) string {
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	fps := 0.0
	if d := time.Duration(r.lastRecv - r.firstSent); d > 0 {
		fps = float64(r.received) / d.Seconds()
	}
	return fmt.Sprintf("report run=%d frames=%d received=%d duplicates=%d missing=%d checksum_failures=%d fps=%.0f p50_us=%d p99_us=%d workers=%d",
		id, r.total, r.received, r.duplicates, r.total-r.received, r.badFrames+malformed, fps,
		percentile(r.latencies, 50)/1000, percentile(r.latencies, 99)/1000, len(r.workers))
}

// spread says how many frames each worker processed.
func (r *runStats) spread(id uint32) string {
	var ws []string
	for w, n := range r.workers {
		ws = append(ws, fmt.Sprintf("%s=%d", w, n))
	}
	sort.Strings(ws)
	return fmt.Sprintf("spread run=%d %s", id, strings.Join(ws, " "))
}

// percentile returns the p-th percentile of sorted samples (nearest rank).
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
