// Command shimmy-bench runs the benchmark harness on its own, for working
// on the harness; `shimmy bench` is the command users run. With --agent it
// mounts an in-process agent (package fs) in a temporary directory for the
// data-file cases, which needs root and /dev/fuse.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/bench/harness"
	"github.com/shimmy-dev/shimmy/fs"
)

func main() {
	quick := flag.Bool("quick", false, "about a minute")
	out := flag.String("out", "", "results directory (default bench/results/<date>)")
	sys := flag.String("systems", "", "comma-separated systems (names or substrings)")
	agent := flag.Bool("agent", true, "mount an in-process agent for the data-file cases")
	flag.Usage = func() { fmt.Fprintln(os.Stderr, harness.Usage()) }
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := harness.Options{Quick: *quick, OutDir: *out, Progress: os.Stderr}
	if *sys != "" {
		opts.Systems = strings.Split(*sys, ",")
	}
	if *agent {
		opts.Agent = inProcessAgent
	}
	if err := harness.Run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "shimmy-bench:", err)
		os.Exit(1)
	}
}

// inProcessAgent mounts package fs's tree in a temporary directory, with
// its rings in a temporary state directory on /dev/shm.
func inProcessAgent(ctx context.Context) (string, func(), error) {
	mnt, err := os.MkdirTemp("", "shimmy-bench-mnt-")
	if err != nil {
		return "", nil, err
	}
	state, err := os.MkdirTemp("/dev/shm", "shimmy-bench-state-")
	if err != nil {
		os.Remove(mnt)
		return "", nil, err
	}
	lg := logrus.New()
	lg.SetLevel(logrus.WarnLevel)
	reg, err := fs.NewRegistry(fs.RegistryOptions{StateDir: state, Log: lg})
	if err == nil {
		_, _, err = mountAndKeep(mnt, reg, lg)
	}
	if err != nil {
		os.Remove(mnt)
		os.RemoveAll(state)
		return "", nil, err
	}
	return mnt, func() {
		unmount(mnt)
		reg.Close()
		os.Remove(mnt)
		os.RemoveAll(state)
	}, nil
}

var servers = map[string]interface{ Unmount() error }{}

func mountAndKeep(mnt string, reg *fs.Registry, lg *logrus.Logger) (any, bool, error) {
	srv, pt, err := fs.Mount(mnt, reg, fs.MountOptions{Log: lg})
	if err != nil {
		return nil, false, err
	}
	servers[mnt] = srv
	return srv, pt, nil
}

func unmount(mnt string) {
	if s, ok := servers[mnt]; ok {
		s.Unmount()
		delete(servers, mnt)
	}
}
