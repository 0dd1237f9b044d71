package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shimmy-dev/shimmy/bench/harness"
)

func runBench(e *env, args []string) error {
	fl := newFlagSet("bench", "shimmy bench [--quick] [--out DIR] [--systems a,b] [--cases s] [--no-agent]",
		harness.Usage()+`
The data-file cases run against an agent that this command starts on a
temporary mount (root and /dev/fuse needed); --no-agent skips them.
Install the peers first: make bench-deps.`,
		"make bench-deps && shimmy bench --quick")
	quick := fl.Bool("quick", false, "about a minute: 16 B and 100 KB, 10 K messages, short caps")
	out := fl.String("out", "", "results directory (default bench/results/<date>)")
	systems := fl.String("systems", "", "comma-separated systems to run (names or substrings); empty: all")
	cases := fl.String("cases", "", "comma-separated substrings of case names to run (e.g. \"size=16B count=1M subs=1\"); empty: all")
	noAgent := fl.Bool("no-agent", false, "skip the data-file cases (no FUSE mount)")
	replot := fl.String("replot", "", "redraw the plots of this results directory from its results.json, and run nothing")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return err
	}
	if *replot != "" {
		return harness.Replot(*replot)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := harness.Options{Quick: *quick, OutDir: *out, Progress: e.stderr}
	if *systems != "" {
		opts.Systems = strings.Split(*systems, ",")
	}
	if *cases != "" {
		opts.Cases = strings.Split(*cases, ",")
	}
	if !*noAgent {
		opts.Agent = harness.InProcessAgent
	}
	return harness.Run(ctx, opts)
}
