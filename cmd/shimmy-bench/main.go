// Command shimmy-bench runs the Shimmy paper's evaluation on this machine:
// Shimmy through mmap and through the agent's data files against
// Mosquitto, NATS, Redis and kernel sockets (package bench/harness,
// docs/benchmarks.md). It is a binary of its own so that the node binary,
// cmd/shimmy, links no broker client and no plotting library.
//
//	shimmy-bench [--quick] [--remote] [--out DIR] [--systems a,b] [--cases s] [--rounds N] [--no-agent] [--shimmy PATH] [--replot DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shimmy-dev/shimmy/bench/harness"
	"github.com/shimmy-dev/shimmy/fs"
)

const synopsis = "shimmy-bench [--quick] [--remote] [--out DIR] [--systems a,b,...] [--cases s,...] [--rounds N] [--no-agent] [--shimmy PATH] [--replot DIR]"

const notes = `
The data-file cases run against an agent that this command starts on a
temporary mount (root and /dev/fuse needed); --no-agent skips them.
--remote runs the remote cases instead: publisher and subscriber on two
hosts (network namespaces joined by veth; root, unshare, nsenter, ip),
Shimmy's mirror between two real shimmy agents (--shimmy, default the
shimmy beside this binary) against TCP, NATS and Mosquitto across the
same link. Install the peers first: make bench-deps.`

const example = "make bench-deps && shimmy-bench --quick"

func main() {
	// The harness re-executes this binary for every publisher and
	// subscriber; such a process runs its role and nothing else.
	if code, ok := harness.Child(); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs the benchmark: exit status 0, 1 (failed) or 2
// (bad command line).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("shimmy-bench", flag.ContinueOnError)
	fl.SetOutput(io.Discard) // errors are reported once, below
	quick := fl.Bool("quick", false, "about a minute: 16 B and 100 KB, 10 K messages, short caps")
	out := fl.String("out", "", "results directory (default bench/results/<date>)")
	systems := fl.String("systems", "", "comma-separated systems to run (names or substrings); empty: all")
	cases := fl.String("cases", "", "comma-separated substrings of case names to run (e.g. \"size=16B count=1M subs=1\"); empty: all")
	noAgent := fl.Bool("no-agent", false, "skip the data-file cases (no FUSE mount)")
	replot := fl.String("replot", "", "redraw the plots and results.md of this results directory from its results.json, and run nothing")
	rounds := fl.Int("rounds", 1, "run every system this many times, interleaved, and report each case's median round")
	remote := fl.Bool("remote", false, "run the remote cases (two hosts joined by veth) instead of the local ones")
	shimmy := fl.String("shimmy", "", "with --remote: the shimmy binary the hosts' agents run (default: shimmy beside this binary, else in PATH)")
	err := fl.Parse(args)
	if err == nil && fl.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "Usage:\n  %s\n\n%s\n%s\n\nFlags:\n", synopsis, harness.Usage(), notes)
		fl.SetOutput(stdout)
		fl.PrintDefaults()
		fmt.Fprintf(stdout, "\nExample:\n  %s\n", example)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "shimmy-bench: %v\nRun \"shimmy-bench --help\" for usage.\n", err)
		return 2
	}
	if *replot != "" {
		err = harness.Replot(*replot)
	} else {
		opts := harness.Options{Quick: *quick, OutDir: *out, Progress: stderr, Rounds: *rounds, Remote: *remote, Shimmy: *shimmy}
		if *systems != "" {
			opts.Systems = strings.Split(*systems, ",")
		}
		if *cases != "" {
			opts.Cases = strings.Split(*cases, ",")
		}
		if !*noAgent && !*remote {
			opts.Agent = harness.InProcessAgent(fs.FrontEnd(fs.MountOptions{AllowOther: true}))
		}
		err = harness.Run(ctx, opts)
	}
	if err != nil {
		fmt.Fprintf(stderr, "shimmy-bench: %v\n", err)
		return 1
	}
	return 0
}
