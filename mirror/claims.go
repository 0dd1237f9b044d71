package mirror

import (
	"sync"

	"github.com/shimmy-dev/shimmy/channel"
)

// claimMemory is how many of its importers' latest claims a channel's
// exporters can pass over whole.
const claimMemory = 16

// importClaims remembers the latest claims this host's importers
// committed into a ring (a claim is contiguous and one publisher's), so
// that an exporter that passed over the first message of one passes over
// the rest with one SkipTo instead of message by message: a claim of
// 16 B messages holds thousands, and passing over them one at a time was
// a fifth of the receiving agent's CPU.
type importClaims struct {
	mu   sync.Mutex
	next int
	c    [claimMemory]claimRange
}

type claimRange struct {
	start, end channel.Position
	set        bool
}

// add remembers the claim from start (its first frame) to end.
func (ic *importClaims) add(start, end channel.Position) {
	ic.mu.Lock()
	ic.c[ic.next] = claimRange{start, end, true}
	ic.next = (ic.next + 1) % claimMemory
	ic.mu.Unlock()
}

// endOf returns the end of the remembered claim that p (a message
// boundary) lies in, after its start: its messages up to the end are
// imports.
func (ic *importClaims) endOf(p channel.Position) (channel.Position, bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for _, c := range ic.c {
		if c.set && c.start.Before(p) && p.Before(c.end) && p.Seq()-c.start.Seq() < c.end.Seq()-c.start.Seq() {
			return c.end, true
		}
	}
	return 0, false
}
