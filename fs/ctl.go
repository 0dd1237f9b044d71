package fs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// ParseSize reads a byte count: a decimal number with an optional suffix
// K, M or G (powers of 1024; "KiB", "k", "kb" and the like are accepted too).
func ParseSize(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "b"), "i")
	mult := uint64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1<<10, t[:n-1]
		case 'm':
			mult, t = 1<<20, t[:n-1]
		case 'g':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || t == "" {
		return 0, fmt.Errorf("bad size %q", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return v * mult, nil
}

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
			switch v {
			case "pubsub":
				cfg.Type = channel.TypePubSub
			case "stream":
				cfg.Type = channel.TypeStream
			default:
				return cur, fmt.Errorf("type %q: want pubsub or stream", v)
			}
		case "policy":
			gotPolicy = true
			switch v {
			case "block":
				cfg.Policy = channel.PolicyBlock
			case "overwrite":
				cfg.Policy = channel.PolicyOverwrite
			default:
				return cur, fmt.Errorf("policy %q: want block or overwrite", v)
			}
		case "capacity":
			n, err := ParseSize(v)
			if err != nil {
				return cur, fmt.Errorf("capacity: %w", err)
			}
			cfg.Capacity = n
		case "max_message":
			n, err := ParseSize(v)
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
			if d > time.Hour {
				return cur, fmt.Errorf("lease %v: at most 1h", d)
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
