package mirror

import "sync/atomic"

// linkCounts are a peer's cumulative link statistics. They belong to the
// peer's name, not to one peer value: a plan that changes a peer's
// address or identity (an agent restarted elsewhere, a new pod IP under
// Kubernetes) replaces the peer, and its counts go on from where they
// were, as docs/remote.md promises ("since the mirror started").
type linkCounts struct {
	bytes, msgs, losses atomic.Uint64
	reconnects          atomic.Uint64
	ups                 atomic.Uint64 // links that came up
}

// countsFor returns the counts of the peer named name, made at its first
// use. Callers hold m.mu.
func (m *Mirror) countsFor(name string) *linkCounts {
	c := m.counts[name]
	if c == nil {
		c = &linkCounts{}
		m.counts[name] = c
	}
	return c
}
