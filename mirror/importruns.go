package mirror

import (
	"sync"

	"github.com/shimmy-dev/shimmy/channel"
)

// maxImportRuns bounds the claims importRuns remembers per channel: far
// more than a ring's lap holds at any size an exporter falls behind by.
const maxImportRuns = 1 << 14

// importRuns are the ring sequences this host's importers' recent claims
// took (records and gap frames). An exporter whose reader is lapped
// counts lost only the host's own messages among those it skipped: the
// imports are their origins' to send, and the peer gets them there (or
// learns of their loss from its own link).
type importRuns struct {
	mu   sync.Mutex
	runs []seqRun // a ring buffer of the latest claims
	next int      // where the next claim goes
}

// seqRun is the ring sequences [seq, seq+n) of one claim (modulo 2^32).
type seqRun struct{ seq, n uint32 }

// claimed records a committed claim of n sequences from position at.
func (ir *importRuns) claimed(at channel.Position, n uint32) {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	if len(ir.runs) < maxImportRuns {
		ir.runs = append(ir.runs, seqRun{at.Seq(), n})
		return
	}
	ir.runs[ir.next] = seqRun{at.Seq(), n}
	ir.next = (ir.next + 1) % maxImportRuns
}

// own returns how many of the messages between from and to (a lapped
// reader's skip) were not taken by a remembered import claim.
func (ir *importRuns) own(from, to channel.Position) uint64 {
	d := int64(to.Seq() - from.Seq())
	ir.mu.Lock()
	defer ir.mu.Unlock()
	var imported int64
	for _, r := range ir.runs {
		start := int64(int32(r.seq - from.Seq())) // relative to from
		lo, hi := max(start, 0), min(start+int64(r.n), d)
		if hi > lo {
			imported += hi - lo
		}
	}
	return uint64(max(d-imported, 0))
}
