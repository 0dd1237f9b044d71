package mirror

import "github.com/shimmy-dev/shimmy/channel"

// An importer publishes quietly (channel.PublisherOptions.Quiet) and the
// exporters of its host sleep deaf to it (SubscriberOptions.DeafToQuiet):
// an exporter woken for every imported batch only passed over it, about a
// tenth of the receiving agent's CPU with 100 KB messages. Every local
// publisher still wakes them. They must still pass over the imports now
// and then: the position past them is the peer's high-water mark and,
// in a block ring, where the peer's slot may move, without which the
// imports would fill the ring and wait for it. So the importer wakes them
// all after every wakeShare-th of the ring it published (an exporter
// tells its peer after a quarter, skipDue); less than that waits for the
// next local message, or the sleep's safety timeout, holding back at most
// that share of a block ring meanwhile.
const wakeShare = 8

// exporterWake counts what an importer published since it last woke its
// host's exporters.
type exporterWake struct {
	bytes uint64
}

// published counts a claim of sizes (payload lengths) that pub committed
// quietly, and wakes every reader of the ring once a wakeShare-th of its
// capacity went in unannounced.
func (w *exporterWake) published(pub *channel.Publisher, sizes []int, capacity uint64) {
	for _, n := range sizes {
		w.bytes += uint64(channel.FrameHeaderLen + n)
	}
	if w.bytes >= capacity/wakeShare {
		w.bytes = 0
		pub.WakeAll()
	}
}
