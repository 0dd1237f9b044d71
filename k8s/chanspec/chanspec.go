// Package chanspec converts a SharedMemoryChannel's spec into the
// registry's typed configuration: the one place where the resource's
// vocabulary (quantities, durations, names) meets the ring's.
package chanspec

import (
	"errors"
	"fmt"
	"math"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/shimmy-dev/shimmy/channel"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
	"github.com/shimmy-dev/shimmy/registry"
)

// ErrSpec is wrapped by every error of Change; an error the ring's own
// checks give wraps channel.ErrConfig too.
var ErrSpec = errors.New("chanspec: invalid spec")

// Change returns the registry change that gives a channel exactly the
// spec's settings: every field is set, an unset one to the ring's default
// (maxMessage: the default for the spec's capacity), so that applying it
// to any configuration yields the same one. The API server's schema
// already refuses what Change refuses; Change checks again because a
// node must not trust that every object passed that schema.
func Change(s v1.SharedMemoryChannelSpec) (registry.Change, error) {
	var cfg channel.Config // zero fields take the ring's defaults
	if s.Type != "" {
		if err := cfg.Type.UnmarshalText([]byte(s.Type)); err != nil {
			return registry.Change{}, fmt.Errorf("%w: type: %w", ErrSpec, err)
		}
	}
	if s.Overflow != "" {
		if err := cfg.Policy.UnmarshalText([]byte(s.Overflow)); err != nil {
			return registry.Change{}, fmt.Errorf("%w: overflow: %w", ErrSpec, err)
		}
	}
	var err error
	if cfg.Capacity, err = byteCount("capacity", s.Capacity, math.MaxInt64); err != nil {
		return registry.Change{}, err
	}
	maxMessage, err := byteCount("maxMessage", s.MaxMessage, math.MaxUint32)
	if err != nil {
		return registry.Change{}, err
	}
	cfg.MaxMessage = uint32(maxMessage)
	if s.MemberSlots != nil {
		if *s.MemberSlots < 1 {
			return registry.Change{}, fmt.Errorf("%w: memberSlots %d (want at least 1)", ErrSpec, *s.MemberSlots)
		}
		cfg.MemberSlots = uint32(*s.MemberSlots)
	}
	if s.Lease != nil {
		if s.Lease.Duration <= 0 {
			return registry.Change{}, fmt.Errorf("%w: lease %v (want a positive duration)", ErrSpec, s.Lease.Duration)
		}
		cfg.Lease = s.Lease.Duration
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return registry.Change{}, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	return registry.Change{
		Type: &cfg.Type, Policy: &cfg.Policy, Capacity: &cfg.Capacity,
		MaxMessage: &cfg.MaxMessage, MemberSlots: &cfg.MemberSlots, Lease: &cfg.Lease,
	}, nil
}

// byteCount reads a byte count from 1 to max; nil is 0 (the default).
func byteCount(field string, q *resource.Quantity, max int64) (uint64, error) {
	if q == nil {
		return 0, nil
	}
	n, ok := q.AsInt64()
	if !ok || n < 1 || n > max {
		return 0, fmt.Errorf("%w: %s %s (want a whole number of bytes from 1 to %d)", ErrSpec, field, q, max)
	}
	return uint64(n), nil
}
