package mirror

import "slices"

// releaseUnshared lets go at once of the block slots kept for peers
// (parkHold) that the plan no longer shares the channel with: a share the
// plan removed is not a link that is down, and its slot would otherwise
// hold publishers back, and keep the channel in use, for Hold. It runs
// after every plan change and after every slot parked, so that a slot
// parked while the plan changed is released by one or the other.
func (m *Mirror) releaseUnshared() {
	m.mu.Lock()
	shared := map[holdKey]bool{}
	for _, pe := range m.plan.Peers {
		for _, sh := range m.plan.sharesWith(pe.Name) {
			shared[holdKey{pe.ID(), chanKey{NS: sh[0], Ch: sh[1]}}] = true
		}
	}
	m.mu.Unlock()
	var gone []*hold
	m.hmu.Lock()
	for k, hd := range m.holds {
		if !shared[holdKey{k.peer, chanKey{NS: k.key.NS, Ch: k.key.Ch}}] {
			hd.timer.Stop()
			delete(m.holds, k)
			gone = append(gone, hd)
		}
	}
	m.hmu.Unlock()
	for _, hd := range gone {
		hd.release()
	}
}

// closeUnshared closes the importers of channels the plan no longer
// shares with the peer: importers outlive sessions, and their publisher
// slots would keep those channels in use. Like every use of p.importers,
// it runs on the peer's run goroutine or its session's.
func (p *peer) closeUnshared() {
	shares := p.getShares()
	for k, imp := range p.importers {
		if !slices.Contains(shares, [2]string{k.NS, k.Ch}) {
			imp.close()
			delete(p.importers, k)
		}
	}
}
