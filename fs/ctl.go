package fs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// parseCtl applies "key value" lines to cur and validates the result.
// Keys: type, policy, capacity, max_message, member_slots, lease. Empty
// lines and lines starting with '#' are ignored.
func parseCtl(cur channel.Config, text string) (channel.Config, error) {
	cfg := cur
	cfg.Epoch = 0
	var gotPolicy, gotMax bool
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return cur, fmt.Errorf("line %q: want \"key value\"", line)
		}
		k, v := f[0], f[1]
		switch k {
		case "type":
			if err := cfg.Type.UnmarshalText([]byte(v)); err != nil {
				return cur, err
			}
		case "policy":
			gotPolicy = true
			if err := cfg.Policy.UnmarshalText([]byte(v)); err != nil {
				return cur, err
			}
		case "capacity":
			n, err := channel.ParseSize(v)
			if err != nil {
				return cur, fmt.Errorf("capacity: %w", err)
			}
			cfg.Capacity = n
		case "max_message":
			n, err := channel.ParseSize(v)
			if err != nil || n == 0 || n > 1<<31 {
				return cur, fmt.Errorf("max_message %q: want a positive size", v)
			}
			gotMax = true
			cfg.MaxMessage = uint32(n)
		case "member_slots":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return cur, fmt.Errorf("member_slots %q: want a number", v)
			}
			cfg.MemberSlots = uint32(n)
		case "lease":
			d, err := time.ParseDuration(v)
			if err != nil {
				return cur, fmt.Errorf("lease %q: want a duration such as 2s", v)
			}
			cfg.Lease = d
		default:
			return cur, fmt.Errorf("unknown key %q (type, policy, capacity, max_message, member_slots, lease)", k)
		}
	}
	// Streams are always lossless; switching to one implies block.
	if cfg.Type == channel.TypeStream && !gotPolicy {
		cfg.Policy = channel.PolicyBlock
	}
	// A new capacity without an explicit max_message takes the default for it.
	if cfg.Capacity != cur.Capacity && !gotMax {
		cfg.MaxMessage = 0
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cur, err
	}
	return cfg, nil
}
