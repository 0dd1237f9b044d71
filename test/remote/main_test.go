// Package remote holds the end-to-end tests of remote channels: agents
// run as real processes on "hosts" that are network, mount and IPC
// namespaces joined by veth pairs (internal/netnstest), each with its own
// FUSE mount and /dev/shm, mirroring channels to each other over mutual
// TLS; channel members are the e2e tests' helper process
// (test/e2e/internal/pod) run inside the hosts.
package remote

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shimmy-dev/shimmy/internal/testenv"
)

var (
	shimmyBin, podBin string
	skipReason        string
)

func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
		skipReason = "remote tests need root (namespaces, FUSE)"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			skipReason = "remote tests need /dev/fuse: " + err.Error()
		}
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "skipping remote tests:", skipReason)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "shimmy-remote-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		shimmyBin, podBin = filepath.Join(dir, "shimmy"), filepath.Join(dir, "pod")
		for bin, pkg := range map[string]string{shimmyBin: "../../cmd/shimmy", podBin: "../e2e/internal/pod"} {
			if err := testenv.Build(bin, pkg); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}
