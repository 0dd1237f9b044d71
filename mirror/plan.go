package mirror

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"sigs.k8s.io/yaml"

	"github.com/shimmy-dev/shimmy/registry"
)

// Plan says which channels this host shares with which peers. Apply takes
// a whole plan and may be called again at any time with a new one: links
// and flows it no longer names are closed, new ones are opened.
type Plan struct {
	Peers  []Peer  `json:"peers"`
	Shares []Share `json:"shares"`
}

// Peer is another agent this host may link with.
type Peer struct {
	// Name is how shares refer to the peer.
	Name string `json:"name"`
	// Addr is the peer's mirror listener, host:port. A peer without an
	// address is only accepted, never dialed.
	Addr string `json:"addr,omitempty"`
	// Identity is the name in the peer's certificate (rdma.Conn.Peer);
	// default Name.
	Identity string `json:"identity,omitempty"`
}

// ID returns the identity the peer must authenticate as.
func (p Peer) ID() string {
	if p.Identity != "" {
		return p.Identity
	}
	return p.Name
}

// Share names one channel and the peers it is mirrored with.
type Share struct {
	Namespace string   `json:"namespace"`
	Channel   string   `json:"channel"`
	Peers     []string `json:"peers"`
}

// Validate reports the first problem of p, wrapping ErrPlan: names that
// are not registry names, duplicate peers or shares, shares naming a peer
// the plan does not list.
func (p Plan) Validate() error {
	peers := map[string]bool{}
	ids := map[string]bool{}
	for _, pe := range p.Peers {
		if pe.Name == "" {
			return fmt.Errorf("%w: a peer without a name", ErrPlan)
		}
		if peers[pe.Name] || ids[pe.ID()] {
			return fmt.Errorf("%w: peer %q listed twice", ErrPlan, pe.Name)
		}
		peers[pe.Name], ids[pe.ID()] = true, true
	}
	shares := map[[2]string]bool{}
	for _, s := range p.Shares {
		if err := registry.CheckName(s.Namespace); err != nil {
			return fmt.Errorf("%w: share namespace: %w", ErrPlan, err)
		}
		if err := registry.CheckName(s.Channel); err != nil {
			return fmt.Errorf("%w: share channel: %w", ErrPlan, err)
		}
		k := [2]string{s.Namespace, s.Channel}
		if shares[k] {
			return fmt.Errorf("%w: %s/%s shared twice", ErrPlan, s.Namespace, s.Channel)
		}
		shares[k] = true
		for _, n := range s.Peers {
			if !peers[n] {
				return fmt.Errorf("%w: %s/%s names unknown peer %q", ErrPlan, s.Namespace, s.Channel, n)
			}
		}
	}
	return nil
}

// sharesWith returns the channels (ns, channel) p shares with peer name,
// sorted.
func (p Plan) sharesWith(name string) [][2]string {
	var out [][2]string
	for _, s := range p.Shares {
		for _, n := range s.Peers {
			if n == name {
				out = append(out, [2]string{s.Namespace, s.Channel})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i][0] < out[j][0] || out[i][0] == out[j][0] && out[i][1] < out[j][1]
	})
	return out
}

// LoadPlan reads a plan from a YAML or JSON file (JSON is YAML) and
// validates it. Unknown fields are errors. The format is in
// docs/remote.md.
func LoadPlan(path string) (Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Plan{}, fmt.Errorf("mirror: plan: %w", err)
	}
	return ParsePlan(b)
}

// ParsePlan is LoadPlan of a file's contents.
func ParsePlan(b []byte) (Plan, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	var p Plan
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	return p, p.Validate()
}
