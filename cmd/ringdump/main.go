// Command ringdump prints the header, queue counters and member table of a
// Shimmy ring file, like Aeron's AeronStat: a read-only look at a live
// channel for debugging.
//
//	ringdump [-watch 1s] <ring-file>
//
// The file is mapped read-only (PROT_READ, MAP_SHARED), so ringdump never
// disturbs the channel: it takes no member slot and writes nothing.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unsafe"

	"github.com/shimmy-dev/shimmy/channel"
	"golang.org/x/sys/unix"
)

const usage = `usage: ringdump [-watch interval] <ring-file>

Prints a Shimmy ring file (docs/ring-format.md): the header (magic,
version, type, policy, capacity, max message, member slots, epoch, lease,
agent heartbeat), each queue's counters (tail, head, release, limit as
seq/units, reaped records, sleeping waiters) and the member table (slot,
state, role, queue, pid, lease age, cursor, lag, lost, count).

The file is mapped read-only: ringdump takes no member slot and writes
nothing, so it is safe on a live channel. Values are read without a
snapshot of the whole ring, so counters of a busy ring may disagree by the
messages published while they were read.

Positions print as seq/units: seq counts messages, units count 16-byte
units of the data stream (both modulo 2^32).

Flags:
`

func main() {
	watch := flag.Duration("watch", 0, "print again every `interval` (e.g. 1s) until interrupted; 0 prints once")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(os.Stdout, flag.Arg(0), *watch); err != nil {
		fmt.Fprintln(os.Stderr, "ringdump:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, path string, watch time.Duration) error {
	v, err := mapRing(path)
	if err != nil {
		return err
	}
	defer func() { v.close() }()
	for {
		dump(w, v, time.Now())
		if watch <= 0 {
			return nil
		}
		time.Sleep(watch)
		// A re-created channel has a new header (and maybe a new size):
		// map it again rather than print the old geometry.
		if v.r.Recreated() || v.grown() {
			v.close()
			if v, err = mapRing(path); err != nil {
				return err
			}
			fmt.Fprintln(w, "(ring was re-created; reopened)")
		}
	}
}

// view is a read-only mapping of a ring file.
type view struct {
	path string
	size int64
	mem  []byte
	r    *channel.Ring
}

func mapRing(path string) (*view, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() < channel.HeaderLen {
		return nil, fmt.Errorf("%s: %d bytes, smaller than the %d-byte ring header", path, st.Size(), channel.HeaderLen)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	// Open only reads the header; it is safe on read-only memory.
	r, err := channel.Open(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &view{path: path, size: st.Size(), mem: mem, r: r}, nil
}

func (v *view) grown() bool {
	st, err := os.Stat(v.path)
	return err == nil && st.Size() != v.size
}

func (v *view) close() {
	// The Ring holds no members, so there is nothing to release; Close
	// only stops heartbeats it never started.
	v.r.Close()
	unix.Munmap(v.mem)
}

// u64 and u32 load a field of the mapping atomically (other processes
// write it while we read).
func (v *view) u64(off uint64) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&v.mem[off])))
}

func (v *view) u32(off uint64) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&v.mem[off])))
}

func stateName(s uint32) string {
	switch s {
	case channel.MemberFree:
		return "free"
	case channel.MemberInit:
		return "init"
	case channel.MemberActive:
		return "active"
	case channel.MemberDead:
		return "dead"
	}
	return fmt.Sprintf("state(%d)", s)
}

func roleName(r uint32, typ channel.Type) string {
	switch {
	case r == channel.RolePublisher:
		return "publisher"
	case r == channel.RoleSubscriber && typ == channel.TypeStream:
		return "reader"
	case r == channel.RoleSubscriber:
		return "subscriber"
	}
	return fmt.Sprintf("role(%d)", r)
}

func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

func age(beat uint64, now int64) string {
	if beat == 0 {
		return "-"
	}
	return time.Duration(now - int64(beat)).Round(time.Microsecond).String()
}

func dump(w io.Writer, v *view, now time.Time) {
	cfg := v.r.Config()
	mono := monotonic()
	magic := v.mem[channel.OffMagic : channel.OffMagic+8]
	fmt.Fprintf(w, "ring %s (%d bytes) at %s\n", v.path, v.size, now.Format(time.RFC3339Nano))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  magic\t%q\tversion\t%d\n", magic, v.u32(channel.OffVersion))
	fmt.Fprintf(tw, "  type\t%s\tpolicy\t%s\n", cfg.Type, cfg.Policy)
	fmt.Fprintf(tw, "  capacity\t%d\tmax message\t%d\n", cfg.Capacity, cfg.MaxMessage)
	fmt.Fprintf(tw, "  member slots\t%d\tlease\t%v\n", cfg.MemberSlots, cfg.Lease)
	fmt.Fprintf(tw, "  epoch\t%d (%s)\tfile size\t%d\n", cfg.Epoch, time.Unix(0, int64(cfg.Epoch)).UTC().Format(time.RFC3339), v.u64(channel.OffFileSize))
	fmt.Fprintf(tw, "  data offset\t%d\tmembers offset\t%d\n", v.u64(channel.OffDataOffset), v.u64(channel.OffMembersOffset))
	fmt.Fprintf(tw, "  agent pid\t%d\tagent beat age\t%s\n", v.u32(channel.OffAgentPid), age(v.u64(channel.OffAgentBeat), mono))
	if v.r.Recreated() {
		fmt.Fprintf(tw, "  NOTE\tre-created since opened (epoch now %d)\n", v.u64(channel.OffEpoch))
	}
	tw.Flush()

	fmt.Fprintln(w, "queues (positions as seq/units):")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  queue\ttail\thead\trelease\tlimit\tin use\treaped\tdata waiters\tspace waiters\t")
	for q := 0; q < v.r.Queues(); q++ {
		s := v.r.QueueStats(q)
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", q, s.Tail, s.Head, s.Release,
			s.Limit, s.InUse, s.Reaped, s.DataWaiters, s.SpaceWaiters)
	}
	tw.Flush()

	members := v.r.Members()
	fmt.Fprintf(w, "members (%d of %d slots in use):\n", len(members), cfg.MemberSlots)
	if len(members) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  slot\tstate\trole\tqueue\tpid\tlease age\tcursor\tlag\tpending\tlost\tcount\t")
	for _, m := range members {
		cursor, lag := "-", "-"
		if m.Role == channel.RoleSubscriber && cfg.Type == channel.TypePubSub {
			cursor, lag = channel.Position(m.Cursor).String(), fmt.Sprint(m.Lag)
		}
		// Pending keeps the last claim after commit; only a non-zero
		// length means a claim (or stream take) is in flight.
		pending := "-"
		if m.PendingLen != 0 {
			pending = fmt.Sprintf("%s+%dB", channel.Position(m.Pending), m.PendingLen)
		}
		leaseAge := "-"
		if m.LeaseAge != 0 {
			leaseAge = m.LeaseAge.Round(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t\n", m.Slot, stateName(m.State), roleName(m.Role, cfg.Type),
			m.Queue, m.Pid, leaseAge, cursor, lag, pending, m.Lost, m.Count)
	}
	tw.Flush()
}
