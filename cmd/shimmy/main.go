// Command shimmy is the Shimmy node agent and its command-line client.
//
// The agent serves shared-memory channels as files under a FUSE mount
// (default /run/shimmy); the client subcommands create, inspect, publish to
// and subscribe from those channels through the mount with plain file I/O.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/shimmy-dev/shimmy/channel"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// env carries the process environment into a command, so that tests can
// run commands in-process with their own streams and variables.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"agent", "run the node agent: mount the channel filesystem and serve it", runAgent},
		{"controller", "run the Kubernetes controller: channel status and mirroring plans", runController},
		{"create", "create a channel", runCreate},
		{"pub", "publish messages to a channel", runPub},
		{"sub", "subscribe to a channel and print its messages", runSub},
		{"ls", "list namespaces or the channels of a namespace", runLs},
		{"stat", "print a channel's configuration and statistics", runStat},
		{"rm", "remove an idle channel", runRm},
		{"version", "print the version", runVersion},
	}
}

const mainUsage = `shimmy: shared-memory channels served as files.

Usage:
  shimmy <command> [flags] [arguments]

Commands:
%s
Run "shimmy <command> --help" for a command's flags and an example.

Example:
  shimmy agent &                       # on each node, as root
  shimmy create demo/chat --capacity 4M
  shimmy sub demo/chat &
  shimmy pub demo/chat "hello"
`

func usage(w io.Writer) {
	var list string
	width := 0
	for _, c := range commands() {
		width = max(width, len(c.name))
	}
	for _, c := range commands() {
		list += fmt.Sprintf("  %-*s %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

// errUsage marks errors caused by the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// errHelpShown: --help printed the usage; exit 0.
var errHelpShown = errors.New("help shown")

func run(e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(e.stdout)
		return exitOK
	case "-version", "--version":
		name = "version"
	case "bench":
		// The evaluation against brokers left this binary, which runs on
		// every node, so that it links no broker client.
		fmt.Fprintln(e.stderr, "shimmy: the benchmark is a separate command now: run shimmy-bench (make build makes bin/shimmy-bench; docs/benchmarks.md)")
		return exitUsage
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(e, args[1:])
		var ue usageError
		switch {
		case err == nil, errors.Is(err, errHelpShown):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "shimmy %s: %v\nRun \"shimmy %s --help\" for usage.\n", name, err, name)
			return exitUsage
		default:
			fmt.Fprintf(e.stderr, "shimmy %s: %v\n", name, err)
			return exitFail
		}
	}
	fmt.Fprintf(e.stderr, "shimmy: unknown command %q\n\n", name)
	usage(e.stderr)
	return exitUsage
}

func runVersion(e *env, args []string) error {
	fl := newFlagSet("version", "shimmy version",
		"Print the version of shimmy, the ring ABI version it speaks and the Go version it was built with.",
		"shimmy version")
	if _, err := parse(fl, e, args, 0, 0); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "shimmy %s (ring ABI v%d, %s %s/%s)\n", version, channel.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func main() {
	os.Exit(run(&env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:]))
}
