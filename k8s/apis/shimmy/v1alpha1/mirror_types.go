package v1alpha1

// MirrorPlan is the controller's mirroring plan for one channel (DESIGN:
// "Remote channels: principles"): every peer links directly with every
// other peer, one link per pair of nodes, and nothing is relayed. An agent
// whose node is not listed mirrors nothing of the channel.
type MirrorPlan struct {
	// Peers are the nodes that need the channel, hold it (state Ready or
	// NeedsIdle) and report a mirror address, sorted by name.
	//
	// +listType=map
	// +listMapKey=name
	Peers []MirrorPeer `json:"peers"`
}

// MirrorPeer is one node of a MirrorPlan.
type MirrorPeer struct {
	// Name of the node.
	Name string `json:"name"`
	// Address is the node's mirrorAddress ("host:port" of its mirror).
	Address string `json:"address"`
}
