package mirror

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shimmy-dev/shimmy/channel"
)

func TestImportClaims(t *testing.T) {
	pos := channel.MakePosition
	var ic importClaims
	ic.add(pos(10, 100), pos(20, 140))
	ic.add(pos(1<<32-2, 1<<32-8), pos(3, 12)) // across the counters' wrap
	for _, tc := range []struct {
		name string
		p    channel.Position
		end  channel.Position
		ok   bool
	}{
		{"at the start: not yet passed over", pos(10, 100), 0, false},
		{"inside", pos(11, 104), pos(20, 140), true},
		{"at the end", pos(20, 140), 0, false},
		{"after", pos(21, 144), 0, false},
		{"before", pos(9, 96), 0, false},
		{"inside, across the wrap", pos(1, 4), pos(3, 12), true},
		{"units inside, sequence not", pos(30, 104), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end, ok := ic.endOf(tc.p)
			if ok != tc.ok || end != tc.end {
				t.Fatalf("endOf(%v) = %v, %v; want %v, %v", tc.p, end, ok, tc.end, tc.ok)
			}
		})
	}
	for i := range claimMemory {
		ic.add(pos(uint32(1000+10*i), uint32(5000+100*i)), pos(uint32(1005+10*i), uint32(5050+100*i)))
	}
	if _, ok := ic.endOf(pos(11, 104)); ok {
		t.Fatalf("a claim %d claims ago is still remembered", claimMemory+2)
	}
	if end, ok := ic.endOf(pos(1001, 5010)); !ok || end != pos(1005, 5050) {
		t.Fatalf("endOf(the oldest remembered claim) = %v, %v", end, ok)
	}
}

// TestImportClaimsFile: the claims a run records in the state directory
// are the next run's, for the same ring epoch only, also once the ring
// buffer wrapped.
func TestImportClaimsFile(t *testing.T) {
	pos := channel.MakePosition
	path := filepath.Join(t.TempDir(), "ch.claims")
	for _, tc := range []struct {
		name   string
		claims int
		epoch  uint64 // of the next run
		want   int    // claims it knows
	}{
		{"same epoch", 10, 1, 10},
		{"wrapped", maxImportClaims + 5, 1, maxImportClaims},
		{"another epoch", 10, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			var ic importClaims
			if err := ic.open(path, 1); err != nil {
				t.Fatal(err)
			}
			for i := range tc.claims {
				ic.add(pos(uint32(10*i), uint32(40*i)), pos(uint32(10*i+5), uint32(40*i+20)))
			}
			ic.close()
			var next importClaims
			if err := next.open(path, tc.epoch); err != nil {
				t.Fatal(err)
			}
			defer next.close()
			// The last claim's messages are imports, the ones after not.
			last := tc.claims - 1
			from, to := pos(uint32(10*last), uint32(40*last)), pos(uint32(10*last+10), uint32(40*last+40))
			if got, want := next.own(from, to), uint64(10-min(tc.want, 1)*5); got != want || len(next.c) != tc.want {
				t.Fatalf("%d claims known, %d own messages of 10; want %d, %d", len(next.c), got, tc.want, want)
			}
			if tc.want == maxImportClaims && next.next != 5 {
				t.Fatalf("next claim goes at %d, want 5", next.next)
			}
		})
	}
}
