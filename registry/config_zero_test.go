package registry

import (
	"errors"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// TestChangeRefusesZero: a zero capacity, maximum message, member slot
// count or lease is refused (the docs give their ranges), not taken as
// "the default" as it once was; the configuration stays as it was.
func TestChangeRefusesZero(t *testing.T) {
	cur := channel.Config{Capacity: 64 << 10}.WithDefaults()
	if err := cur.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    Change
	}{
		{"capacity 0", Change{Capacity: ptr(uint64(0))}},
		{"max_message 0", Change{MaxMessage: ptr(uint32(0))}},
		{"member_slots 0", Change{MemberSlots: ptr(uint32(0))}},
		{"lease 0", Change{Lease: ptr(time.Duration(0))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.Apply(cur)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Apply: %v, want ErrInvalidConfig", err)
			}
			if got != cur {
				t.Errorf("Apply returned %+v, want the configuration unchanged %+v", got, cur)
			}
		})
	}
}
