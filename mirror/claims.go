package mirror

import (
	"sync"

	"github.com/shimmy-dev/shimmy/channel"
)

const (
	// maxImportClaims bounds the claims remembered per channel: far more
	// than a ring's lap holds at any size an exporter falls behind by.
	maxImportClaims = 1 << 14
	// claimMemory is how many of the latest claims an exporter can pass
	// over whole (endOf).
	claimMemory = 16
)

// importClaims remembers the latest claims this host's importers
// committed into a ring (records and gap frames; a claim is contiguous
// and one publisher's). Exporters use it twice:
//   - one that passed over the first message of a recent claim passes
//     over the rest with one SkipTo (endOf): a claim of 16 B messages
//     holds thousands, and passing over them one at a time was a fifth of
//     the receiving agent's CPU;
//   - one whose reader is lapped counts lost only the host's own messages
//     among those it skipped (own): the imports are their origins' to
//     send, and the peer gets them there (or learns of their loss from
//     its own link).
type importClaims struct {
	mu   sync.Mutex
	c    []claimRange // a ring buffer of the latest claims
	next int          // where the next claim goes once c is full
}

// claimRange is one claim: from its first frame to the position after it.
type claimRange struct{ start, end channel.Position }

// add remembers the claim from start (its first frame) to end.
func (ic *importClaims) add(start, end channel.Position) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if len(ic.c) < maxImportClaims {
		ic.c = append(ic.c, claimRange{start, end})
		return
	}
	ic.c[ic.next] = claimRange{start, end}
	ic.next = (ic.next + 1) % maxImportClaims
}

// endOf returns the end of the one of the latest claimMemory claims that
// p (a message boundary) lies in, after its start: its messages up to the
// end are imports.
func (ic *importClaims) endOf(p channel.Position) (channel.Position, bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	newest := ic.next + len(ic.c) // ic.c[(newest-1)%len] is the latest
	for i := 1; i <= min(claimMemory, len(ic.c)); i++ {
		c := ic.c[(newest-i)%len(ic.c)]
		if c.start.Before(p) && p.Before(c.end) && p.Seq()-c.start.Seq() < c.end.Seq()-c.start.Seq() {
			return c.end, true
		}
	}
	return 0, false
}

// own returns how many of the messages between from and to (a lapped
// reader's skip) were not taken by a remembered claim.
func (ic *importClaims) own(from, to channel.Position) uint64 {
	d := int64(to.Seq() - from.Seq())
	ic.mu.Lock()
	defer ic.mu.Unlock()
	var imported int64
	for _, c := range ic.c {
		start := int64(int32(c.start.Seq() - from.Seq())) // relative to from
		lo, hi := max(start, 0), min(start+int64(c.end.Seq()-c.start.Seq()), d)
		if hi > lo {
			imported += hi - lo
		}
	}
	return uint64(max(d-imported, 0))
}
