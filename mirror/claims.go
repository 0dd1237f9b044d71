package mirror

import (
	"encoding/binary"
	"sync"

	"golang.org/x/sys/unix"

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
//
// The claims are kept in a mapped file of the state directory too (a
// store to it outlives the process), so that an exporter lapped after an
// agent restart tells the previous run's imports apart as well.
type importClaims struct {
	mu   sync.Mutex
	c    []claimRange // a ring buffer of the latest claims
	next int          // where the next claim goes once c is full
	mem  []byte       // the file's mapping; nil: in memory only
}

// The claims file: the ring's epoch u64, the claims held u32, next u32,
// then maxImportClaims entries of start u64, end u64.
const (
	claimsHeader = 16
	claimLen     = 16
	claimsSize   = claimsHeader + maxImportClaims*claimLen
)

// open maps the claims file at path, taking up the claims it holds for
// the ring of epoch (a file of another epoch starts empty).
func (ic *importClaims) open(path string, epoch uint64) error {
	mem, err := mapFile(path, claimsSize, "import claims")
	if err != nil {
		return err
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.mem = mem
	n, next := int(binary.LittleEndian.Uint32(mem[8:])), int(binary.LittleEndian.Uint32(mem[12:]))
	if binary.LittleEndian.Uint64(mem) != epoch || n > maxImportClaims || next >= maxImportClaims || n < maxImportClaims && next != 0 {
		binary.LittleEndian.PutUint64(mem, epoch)
		n, next = 0, 0
		ic.storeHeader(0, 0)
	}
	ic.c, ic.next = make([]claimRange, n), next
	for i := range ic.c {
		e := mem[claimsHeader+i*claimLen:]
		ic.c[i] = claimRange{channel.Position(binary.LittleEndian.Uint64(e)), channel.Position(binary.LittleEndian.Uint64(e[8:]))}
	}
	return nil
}

// close unmaps the file; the claims go on in memory only.
func (ic *importClaims) close() {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.mem != nil {
		unix.Munmap(ic.mem)
		ic.mem = nil
	}
}

// store writes claim i into the file, then the count and next that
// include it: an agent killed in between forgets that one claim.
func (ic *importClaims) store(i int) {
	if ic.mem == nil {
		return
	}
	e := ic.mem[claimsHeader+i*claimLen:]
	binary.LittleEndian.PutUint64(e, uint64(ic.c[i].start))
	binary.LittleEndian.PutUint64(e[8:], uint64(ic.c[i].end))
	ic.storeHeader(len(ic.c), ic.next)
}

func (ic *importClaims) storeHeader(n, next int) {
	binary.LittleEndian.PutUint32(ic.mem[8:], uint32(n))
	binary.LittleEndian.PutUint32(ic.mem[12:], uint32(next))
}

// claimRange is one claim: from its first frame to the position after it.
type claimRange struct{ start, end channel.Position }

// add remembers the claim from start (its first frame) to end.
func (ic *importClaims) add(start, end channel.Position) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if len(ic.c) < maxImportClaims {
		ic.c = append(ic.c, claimRange{start, end})
		ic.store(len(ic.c) - 1)
		return
	}
	i := ic.next
	ic.c[i] = claimRange{start, end}
	ic.next = (ic.next + 1) % maxImportClaims
	ic.store(i)
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
