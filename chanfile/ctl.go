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
var CtlKeys = []string{"type", "policy", "capacity", "max_message", "member_slots", "lease", "backing"}

// ParseCtl reads the "key value" lines of one write to ctl into a typed
// change. Empty lines and lines starting with '#' are ignored; a repeated
// key keeps its last value. Errors wrap registry.ErrInvalidConfig.
func ParseCtl(text string) (registry.Change, error) {
	var c registry.Change
	err := eachLine(text, func(k, v string) error { return set(&c, k, v) })
	return c, err
}

// eachLine calls f with the key and value of every "key value" line of
// text, skipping empty lines and '#' comments, until f fails.
func eachLine(text string, f func(k, v string) error) error {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		kv := strings.Fields(line)
		if len(kv) != 2 {
			return invalid("line %q: want \"key value\"", line)
		}
		if err := f(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", registry.ErrInvalidConfig, fmt.Sprintf(format, a...))
}

func set(c *registry.Change, k, v string) error {
	switch k {
	case "type":
		var t channel.Type
		if err := t.UnmarshalText([]byte(v)); err != nil {
			return invalid("%v", err)
		}
		c.Type = &t
	case "policy":
		var p channel.Policy
		if err := p.UnmarshalText([]byte(v)); err != nil {
			return invalid("%v", err)
		}
		c.Policy = &p
	case "capacity":
		n, err := channel.ParseSize(v)
		if err != nil {
			return invalid("capacity: %v", err)
		}
		c.Capacity = &n
	case "max_message":
		n, err := channel.ParseSize(v)
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
	case "backing":
		var b registry.Backing
		if err := b.UnmarshalText([]byte(v)); err != nil {
			return err
		}
		c.Backing = &b
	default:
		return invalid("unknown key %q (%s)", k, strings.Join(CtlKeys, ", "))
	}
	return nil
}

// FormatCtl renders c as ctl lines, for one write.
func FormatCtl(c registry.Change) []byte {
	var b bytes.Buffer
	if c.Type != nil {
		fmt.Fprintf(&b, "type %s\n", *c.Type)
	}
	if c.Policy != nil {
		fmt.Fprintf(&b, "policy %s\n", *c.Policy)
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
	if c.Backing != nil {
		fmt.Fprintf(&b, "backing %s\n", *c.Backing)
	}
	return b.Bytes()
}
