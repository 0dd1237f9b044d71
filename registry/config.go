package registry

import (
	"fmt"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// Change is a typed reconfiguration: nil fields keep their current value.
type Change struct {
	Type        *channel.Type
	Policy      *channel.Policy
	Capacity    *uint64
	MaxMessage  *uint32
	MemberSlots *uint32
	Lease       *time.Duration
	Backing     *Backing // where the new ring lives
}

// Apply returns cur changed by c, with a new epoch, or an error wrapping
// ErrInvalidConfig (and channel.ErrConfig where the ring rejects it).
// Rules: a change to stream without a policy implies block (streams are
// lossless); a new capacity without a max message takes the default max
// message for it.
func (c Change) Apply(cur channel.Config) (channel.Config, error) {
	cfg := cur
	if c.Type != nil {
		cfg.Type = *c.Type
		if *c.Type == channel.TypeStream && c.Policy == nil {
			cfg.Policy = channel.PolicyBlock
		}
	}
	if c.Policy != nil {
		cfg.Policy = *c.Policy
	}
	if c.Capacity != nil {
		if *c.Capacity == 0 {
			return cur, fmt.Errorf("%w: capacity 0", ErrInvalidConfig)
		}
		cfg.Capacity = *c.Capacity
		if *c.Capacity != cur.Capacity && c.MaxMessage == nil {
			cfg.MaxMessage = 0
		}
	}
	if c.MaxMessage != nil {
		if *c.MaxMessage == 0 {
			return cur, fmt.Errorf("%w: max message 0", ErrInvalidConfig)
		}
		cfg.MaxMessage = *c.MaxMessage
	}
	if c.MemberSlots != nil {
		if *c.MemberSlots == 0 {
			return cur, fmt.Errorf("%w: member slots 0", ErrInvalidConfig)
		}
		cfg.MemberSlots = *c.MemberSlots
	}
	if c.Lease != nil {
		if *c.Lease <= 0 {
			return cur, fmt.Errorf("%w: lease %v", ErrInvalidConfig, *c.Lease)
		}
		cfg.Lease = *c.Lease
	}
	if c.Backing != nil {
		if err := c.Backing.UnmarshalText([]byte(*c.Backing)); err != nil {
			return cur, err
		}
	}
	cfg, err := validConfig(cfg)
	if err != nil {
		return cur, err
	}
	return cfg, nil
}
