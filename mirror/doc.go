// Package mirror keeps the replicas of a channel on several hosts in step
// over an rdma transport: the agents' side of remote channels.
//
// Principles (DESIGN.md, "Remote channels"): one link per pair of hosts
// that share a channel, no relaying; each host's ring is the merge point.
// For every channel it shares with a peer, a host runs an exporter, which
// reads what was published locally (skipping what its own importer wrote)
// and sends it to the peer, and an importer, which re-publishes what the
// peer sent into the local ring. Messages are named by (origin agent,
// channel, origin epoch, 64-bit position); the receiver takes each batch
// into a spool (a file of the state directory, bounded by the window it
// grants the origin), persists the position after it (its high-water
// mark), and a link that comes back resumes there. A goroutine per flow
// moves the spool into the ring, one claim at a time, each recorded
// before its commit, so that a receiver killed in the middle of one
// learns from its ring which records it has, and publishes none of them
// twice; a full ring holds up only its own flow.
//
//   - pubsub, block: the peer is one subscriber slot in the origin ring
//     whose cursor is the peer's acknowledged position, so the ring holds
//     publishers back within a window; status messages carry the
//     acknowledgements. While a flow's spool holds records its importer
//     reserves the ring (channel.PublisherOptions.Reserver): the room
//     the acknowledgements free goes to it before local publishers, or
//     two hosts bursting both ways could fill both spools and wait for
//     each other for good.
//   - pubsub, overwrite: the exporter reads as an overwrite subscriber and
//     sends exact gap counts; the importing side counts them as the link's
//     losses and writes them into its ring as gap frames, which every
//     subscriber there counts in its own Lost.
//   - stream: the peer grants credit; the exporter takes records with the
//     normal take protocol only against it, into an outbox that survives
//     link cuts and restarts, and each record reaches exactly one reader.
//
// The wire format is docs/mirror-wire.md; Plan and LoadPlan are the one
// configuration API for static files and the Kubernetes controller.
package mirror
