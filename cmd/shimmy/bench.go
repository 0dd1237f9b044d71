package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/bench/harness"
)

func runBench(e *env, args []string) error {
	fl := newFlagSet("bench", "shimmy bench [--quick] [--out DIR] [--systems a,b] [--no-agent]",
		harness.Usage()+`
The data-file cases run against an agent that this command starts on a
temporary mount (root and /dev/fuse needed); --no-agent skips them.
Install the peers first: make bench-deps.`,
		"make bench-deps && shimmy bench --quick")
	quick := fl.Bool("quick", false, "about a minute: 16 B and 100 KB, 10 K messages, short caps")
	out := fl.String("out", "", "results directory (default bench/results/<date>)")
	systems := fl.String("systems", "", "comma-separated systems to run (names or substrings); empty: all")
	noAgent := fl.Bool("no-agent", false, "skip the data-file cases (no FUSE mount)")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := harness.Options{Quick: *quick, OutDir: *out, Progress: e.stderr}
	if *systems != "" {
		opts.Systems = strings.Split(*systems, ",")
	}
	if !*noAgent {
		opts.Agent = benchAgent
	}
	return harness.Run(ctx, opts)
}

// benchAgent runs an agent in this process on a temporary mount, with its
// rings in a temporary state directory, for the data-file cases.
func benchAgent(ctx context.Context) (string, func(), error) {
	mnt, err := os.MkdirTemp("", "shimmy-bench-mnt-")
	if err != nil {
		return "", nil, err
	}
	state, err := os.MkdirTemp("/dev/shm", "shimmy-bench-state-")
	if err != nil {
		os.Remove(mnt)
		return "", nil, err
	}
	cleanup := func() { os.Remove(mnt); os.RemoveAll(state) }
	cfg := agent.DefaultConfig()
	cfg.MountPoint, cfg.StateDir, cfg.MetricsAddr = mnt, state, ""
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	cfg.Log = log
	a, err := agent.New(cfg)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		cleanup()
		return "", nil, fmt.Errorf("bench agent: %w", err)
	case <-ctx.Done():
		cancel()
		<-done
		cleanup()
		return "", nil, ctx.Err()
	}
	return mnt, func() {
		cancel()
		if err := <-done; err != nil {
			log.WithError(err).Warn("bench agent stopped with an error")
		}
		cleanup()
	}, nil
}
