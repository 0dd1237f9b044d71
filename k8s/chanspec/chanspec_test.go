package chanspec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shimmy-dev/shimmy/channel"
	v1 "github.com/shimmy-dev/shimmy/k8s/apis/shimmy/v1alpha1"
)

func qty(s string) *resource.Quantity { q := resource.MustParse(s); return &q }
func i32(n int32) *int32              { return &n }
func dur(d time.Duration) *metav1.Duration {
	return &metav1.Duration{Duration: d}
}

// spec is a spec with the schema's defaults, changed by f.
func spec(f func(*v1.SharedMemoryChannelSpec)) v1.SharedMemoryChannelSpec {
	s := v1.SharedMemoryChannelSpec{
		Type: v1.TypePubSub, Overflow: v1.OverflowBlock, Capacity: qty("1Mi"),
		MemberSlots: i32(64), Lease: dur(2 * time.Second),
	}
	if f != nil {
		f(&s)
	}
	return s
}

// apply is the configuration Change gives a channel, whatever it had.
func apply(t *testing.T, s v1.SharedMemoryChannelSpec) (channel.Config, error) {
	t.Helper()
	c, err := Change(s)
	if err != nil {
		return channel.Config{}, err
	}
	from := channel.Config{Type: channel.TypeStream, Capacity: 1 << 16, MaxMessage: 100, MemberSlots: 3, Lease: time.Minute}.WithDefaults()
	cfg, err := c.Apply(from)
	if err != nil {
		t.Fatalf("Change(%+v) gave a change the registry refuses: %v", s, err)
	}
	cfg.Epoch = 0
	return cfg, nil
}

func TestChange(t *testing.T) {
	def := channel.Config{}.WithDefaults()
	def.Epoch = 0
	for _, tc := range []struct {
		name string
		spec v1.SharedMemoryChannelSpec
		want func(*channel.Config)
	}{
		{"schema defaults are the ring's", spec(nil), nil},
		{"empty spec takes the ring's defaults", v1.SharedMemoryChannelSpec{}, nil},
		{"stream", spec(func(s *v1.SharedMemoryChannelSpec) { s.Type = v1.TypeStream }), func(c *channel.Config) { c.Type = channel.TypeStream }},
		{"overwrite", spec(func(s *v1.SharedMemoryChannelSpec) { s.Overflow = v1.OverflowOverwrite }), func(c *channel.Config) { c.Policy = channel.PolicyOverwrite }},
		{"capacity takes its default max message", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("4Ki") }),
			func(c *channel.Config) { c.Capacity, c.MaxMessage = 4096, 1024-channel.FrameHeaderLen }},
		{"capacity as a plain number", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("1073741824") }),
			func(c *channel.Config) { c.Capacity = 1 << 30 }},
		{"max message", spec(func(s *v1.SharedMemoryChannelSpec) { s.MaxMessage = qty("100") }), func(c *channel.Config) { c.MaxMessage = 100 }},
		{"largest max message", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity, s.MaxMessage = qty("4Ki"), qty("1008") }),
			func(c *channel.Config) { c.Capacity, c.MaxMessage = 4096, 1008 }},
		{"member slots", spec(func(s *v1.SharedMemoryChannelSpec) { s.MemberSlots = i32(4096) }), func(c *channel.Config) { c.MemberSlots = 4096 }},
		{"lease", spec(func(s *v1.SharedMemoryChannelSpec) { s.Lease = dur(10 * time.Millisecond) }), func(c *channel.Config) { c.Lease = 10 * time.Millisecond }},
		{"mirror is not the ring's", spec(func(s *v1.SharedMemoryChannelSpec) { f := false; s.Mirror = &f }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := def
			if tc.want != nil {
				tc.want(&want)
			}
			got, err := apply(t, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("config %+v, want %+v", got, want)
			}
		})
	}
}

func TestChangeErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   v1.SharedMemoryChannelSpec
		want   string
		config bool // the ring's own check refused it: wraps channel.ErrConfig
	}{
		{"type", spec(func(s *v1.SharedMemoryChannelSpec) { s.Type = "foo" }), `type: channel: invalid configuration: type "foo" (want pubsub or stream)`, true},
		{"overflow", spec(func(s *v1.SharedMemoryChannelSpec) { s.Overflow = "drop" }), `overflow: channel: invalid configuration: policy "drop" (want block or overwrite)`, true},
		{"stream overwrite", spec(func(s *v1.SharedMemoryChannelSpec) { s.Type, s.Overflow = v1.TypeStream, v1.OverflowOverwrite }), "stream channels are always block", true},
		{"capacity not a power of two", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("1M") }), "capacity 1000000 (want a power of two", true},
		{"capacity too small", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("2Ki") }), "capacity 2048 (want a power of two", true},
		{"capacity too large", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("2Gi") }), "capacity 2147483648 (want a power of two", true},
		{"capacity zero", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("0") }), "capacity 0 (want a whole number of bytes", false},
		{"capacity negative", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("-4Ki") }), "capacity -4Ki (want a whole number of bytes", false},
		{"capacity fraction", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("0.5") }), "capacity 500m (want a whole number of bytes", false},
		{"capacity beyond 64 bits", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity = qty("100Ei") }), "(want a whole number of bytes from 1 to 9223372036854775807)", false},
		{"max message zero", spec(func(s *v1.SharedMemoryChannelSpec) { s.MaxMessage = qty("0") }), "maxMessage 0 (want a whole number of bytes from 1 to 4294967295)", false},
		{"max message beyond 32 bits", spec(func(s *v1.SharedMemoryChannelSpec) { s.MaxMessage = qty("4Gi") }), "maxMessage 4Gi (want", false},
		{"max message beyond the capacity", spec(func(s *v1.SharedMemoryChannelSpec) { s.Capacity, s.MaxMessage = qty("4Ki"), qty("1009") }), "max message 1009 exceeds 1008 for capacity 4096", true},
		{"member slots zero", spec(func(s *v1.SharedMemoryChannelSpec) { s.MemberSlots = i32(0) }), "memberSlots 0 (want at least 1)", false},
		{"member slots negative", spec(func(s *v1.SharedMemoryChannelSpec) { s.MemberSlots = i32(-1) }), "memberSlots -1 (want at least 1)", false},
		{"member slots too many", spec(func(s *v1.SharedMemoryChannelSpec) { s.MemberSlots = i32(4097) }), "member slots 4097 (want 1 to 4096)", true},
		{"lease zero", spec(func(s *v1.SharedMemoryChannelSpec) { s.Lease = dur(0) }), "lease 0s (want a positive duration)", false},
		{"lease negative", spec(func(s *v1.SharedMemoryChannelSpec) { s.Lease = dur(-time.Second) }), "lease -1s (want a positive duration)", false},
		{"lease too short", spec(func(s *v1.SharedMemoryChannelSpec) { s.Lease = dur(time.Millisecond) }), "lease 1ms (want 10ms to 1h0m0s)", true},
		{"lease too long", spec(func(s *v1.SharedMemoryChannelSpec) { s.Lease = dur(2 * time.Hour) }), "lease 2h0m0s (want 10ms to 1h0m0s)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Change(tc.spec)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrSpec) {
				t.Errorf("%v does not wrap ErrSpec", err)
			}
			if errors.Is(err, channel.ErrConfig) != tc.config {
				t.Errorf("%v: wraps channel.ErrConfig = %v, want %v", err, !tc.config, tc.config)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}
