package chanfile

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// CtlKeys are the keys ctl takes, in the order FormatCtl writes them.
var CtlKeys = []string{"type", "policy", "capacity", "max_message", "member_slots", "lease"}

// ParseCtl reads the "key value" lines of one write to ctl into a typed
// change. Empty lines and lines starting with '#' are ignored; a repeated
// key keeps its last value. Errors wrap registry.ErrInvalidConfig.
func ParseCtl(text string) (registry.Change, error) {
	var c registry.Change
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return c, invalid("line %q: want \"key value\"", line)
		}
		if err := set(&c, f[0], f[1]); err != nil {
			return c, err
		}
	}
	return c, nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", registry.ErrInvalidConfig, fmt.Sprintf(format, a...))
}

func set(c *registry.Change, k, v string) error {
	switch k {
	case "type":
		t, err := parseType(v)
		if err != nil {
			return err
		}
		c.Type = &t
	case "policy":
		p, err := parsePolicy(v)
		if err != nil {
			return err
		}
		c.Policy = &p
	case "capacity":
		n, err := parseSize(v)
		if err != nil {
			return invalid("capacity: %v", err)
		}
		c.Capacity = &n
	case "max_message":
		n, err := parseSize(v)
		if err != nil || n == 0 || n > 1<<31 {
			return invalid("max_message %q: want a positive size", v)
		}
		m := uint32(n)
		c.MaxMessage = &m
	case "member_slots":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return invalid("member_slots %q: want a number", v)
		}
		s := uint32(n)
		c.MemberSlots = &s
	case "lease":
		d, err := time.ParseDuration(v)
		if err != nil {
			return invalid("lease %q: want a duration such as 2s", v)
		}
		c.Lease = &d
	default:
		return invalid("unknown key %q (%s)", k, strings.Join(CtlKeys, ", "))
	}
	return nil
}

// FormatCtl renders c as ctl lines, for one write.
func FormatCtl(c registry.Change) []byte {
	var b bytes.Buffer
	if c.Type != nil {
		fmt.Fprintf(&b, "type %s\n", typeName(*c.Type))
	}
	if c.Policy != nil {
		fmt.Fprintf(&b, "policy %s\n", policyName(*c.Policy))
	}
	if c.Capacity != nil {
		fmt.Fprintf(&b, "capacity %d\n", *c.Capacity)
	}
	if c.MaxMessage != nil {
		fmt.Fprintf(&b, "max_message %d\n", *c.MaxMessage)
	}
	if c.MemberSlots != nil {
		fmt.Fprintf(&b, "member_slots %d\n", *c.MemberSlots)
	}
	if c.Lease != nil {
		fmt.Fprintf(&b, "lease %s\n", *c.Lease)
	}
	return b.Bytes()
}

func parseType(v string) (uint32, error) {
	switch v {
	case "pubsub":
		return channel.TypePubSub, nil
	case "stream":
		return channel.TypeStream, nil
	}
	return 0, invalid("type %q: want pubsub or stream", v)
}

func parsePolicy(v string) (uint32, error) {
	switch v {
	case "block":
		return channel.PolicyBlock, nil
	case "overwrite":
		return channel.PolicyOverwrite, nil
	}
	return 0, invalid("policy %q: want block or overwrite", v)
}

func typeName(t uint32) string {
	if t == channel.TypeStream {
		return "stream"
	}
	return "pubsub"
}

func policyName(p uint32) string {
	if p == channel.PolicyOverwrite {
		return "overwrite"
	}
	return "block"
}

// parseSize reads a byte count: a decimal number with an optional suffix
// K, M or G (powers of 1024; "KiB", "k", "kb" and the like are accepted too).
func parseSize(s string) (uint64, error) {
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
