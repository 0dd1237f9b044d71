// Package channel is the Shimmy ring: the shared-memory ABI (layout.go)
// and a Go client for it. Publishers, subscribers and stream readers in
// any processes map the same ring and coordinate only through it.
//
// # Batches
//
// Small messages are cheapest in batches: Publisher.ClaimBatch reserves
// frames for several messages in one claim (one tail update, one claim
// record, one wake-up check), to be filled in place and published with
// CommitBatch; PublishBatch copies a slice of messages the same way.
// Subscribers see all of a batch or none of it, in order, one message at a
// time. A subscriber stores its shared cursor every 64 messages (or a
// sixteenth of the ring) and before it waits, not after every message;
// observers (Members, the agent's stats) see its lag that much later.
//
// # Liveness
//
// A process may die at any instruction, holding a claim, a take or a
// cursor that others wait on. Every member therefore holds a lease in its
// member slot: a CLOCK_MONOTONIC timestamp that a goroutine of its process
// refreshes every Lease/4 (Config.Lease, default DefaultLease = 2s). A
// member whose lease is older than Lease is taken for dead; a live process
// that stalls that long (SIGSTOP, swapping) is treated the same, and its
// next operation fails with ErrEvicted. No one waits on a dead member for
// much longer than the lease:
//
//   - Dead subscriber (block policy): publishers are held back by the
//     slowest live subscriber. A publisher that finds no room recomputes
//     that limit (or, while the subscriber that held it last is still
//     live and still in the way, only looks at that one) at each wake-up
//     (at least every min(Lease/4, 500 ms) while it waits) and evicts
//     subscribers whose lease expired, so it goes on about Lease after
//     the death. Ring.Reap (called by the agent, or by anyone)
//     evicts them too. With the overwrite policy dead subscribers hold
//     no one back; Reap frees their slots.
//
//   - Dead publisher holding a claim: readers cannot pass an uncommitted
//     frame. A reader parked on one tries every Lease/4 to unblock it; once
//     the owner's lease has expired the claim is committed as one padding
//     frame (counted in the queue's Reaped counter) and readers go on at
//     the next message: the claimed messages (all of a batch) are gone,
//     and their sequence numbers are skipped. Publishers never lap a claim
//     that is neither committed nor padded (whatever the policy: its owner
//     may still write there); a publisher that needs the room pads a dead
//     one's first. Publisher.Close of a claim never committed pads it at
//     once.
//
//   - Stalled members: a publisher that comes back after its claim was
//     padded gets ErrEvicted from Commit and nothing is published (the
//     commit is a CAS that fails on the padding); a block subscriber that
//     was evicted gets ErrEvicted from its next read (never ErrCorrupt,
//     even when publishers lapped it as it read), and Valid reports false
//     after Peek, since publishers may have reused the frame; a stream
//     reader reaped while it held a take gets ErrEvicted and the message
//     went with it. Payload bytes a stalled publisher
//     writes after its claim was reused cannot be stopped: fill a claim
//     well within the lease.
//
//   - Stream takes: a reader announces a take (Pending, PendingLen) before
//     it moves Head past a record, and marks the record consumed after
//     copying it out. Writers reuse space only behind Release, which stops
//     at a record taken but not yet consumed. A writer that finds no room
//     marks consumed the record at Release if every reader that announced
//     taking it is dead; the message went with that reader. A reader that
//     dies while waiting in Next holds nothing and is freed by Reap.
//
//   - Dead exclusive publisher (PublisherOptions.Exclusive): the same as
//     any publisher; when its slot is evicted the queue is free for other
//     publishers again.
//
// Ring.Reap does all of the above at once, pads a dead publisher's claim
// that no reader has reached yet (there may be no reader at all), and
// frees the slots of dead members that no longer block anyone;
// Ring.Members shows every slot with the age of its lease.
package channel
