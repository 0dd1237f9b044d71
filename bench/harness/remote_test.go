package harness

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shimmy-dev/shimmy/internal/nethost"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// TestRemoteEndToEnd runs a tiny case of every remote system on two hosts
// (network namespaces joined by veth), the publisher on one and the
// subscriber on the other, and checks that every message crossed intact,
// counted end to end. The hosts are made once for all systems, as a
// --remote run makes them.
func TestRemoteEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no hosts")
	}
	if err := nethost.Check(); err != nil {
		t.Skip(err)
	}
	tmp := t.TempDir()
	shimmy := filepath.Join(tmp, "shimmy")
	if err := testenv.Build(shimmy, "github.com/shimmy-dev/shimmy/cmd/shimmy"); err != nil {
		t.Fatal(err)
	}
	rh, err := newRemote(tmp, shimmy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rh.close)
	for _, sys := range systems {
		if !sys.remote {
			continue
		}
		t.Run(sys.name, func(t *testing.T) {
			if sys.pkg != "" {
				if _, err := findBinary(sys.pkg); err != nil {
					t.Skipf("%s is not installed (apt-get install -y %s, or make bench-deps)", sys.pkg, sys.pkg)
				}
			}
			if _, err := os.Stat("/dev/fuse"); sys.name == SysMirror && err != nil {
				t.Skipf("the agents need /dev/fuse: %v", err)
			}
			for _, c := range []Case{
				{Mode: "throughput", Size: 100, Count: 300, Subs: 1},
				{Mode: "throughput", Size: 100_000, Count: 20, Subs: 1},
				{Mode: "latency", Size: 16, Count: 50, Subs: 1, Rate: 2000},
			} {
				checkTinyRun(t, sys, c, tmp, rh, Options{})
			}
		})
	}
}
