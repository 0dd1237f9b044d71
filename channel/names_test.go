package channel

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// textValue is a Type or Policy after UnmarshalText.
type textValue interface {
	fmt.Stringer
	encoding.TextMarshaler
}

func TestTypePolicyText(t *testing.T) {
	typ := func(s string) (textValue, error) { v := Type(77); err := v.UnmarshalText([]byte(s)); return v, err }
	policy := func(s string) (textValue, error) { v := Policy(77); err := v.UnmarshalText([]byte(s)); return v, err }
	for _, tc := range []struct {
		in    string
		parse func(string) (textValue, error)
		want  textValue
		bad   string // what the error names; "": valid
	}{
		{"pubsub", typ, TypePubSub, ""},
		{"stream", typ, TypeStream, ""},
		{"", typ, Type(77), "want pubsub or stream"},
		{"PubSub", typ, Type(77), "want pubsub or stream"},
		{"queue", typ, Type(77), "want pubsub or stream"},
		{"block", policy, PolicyBlock, ""},
		{"overwrite", policy, PolicyOverwrite, ""},
		{"drop", policy, Policy(77), "want block or overwrite"},
		{" block", policy, Policy(77), "want block or overwrite"},
	} {
		got, err := tc.parse(tc.in)
		if got != tc.want {
			t.Errorf("UnmarshalText(%q) gives %v, want %v", tc.in, got, tc.want)
		}
		if tc.bad != "" {
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("UnmarshalText(%q): %v; want ErrConfig saying %q", tc.in, err, tc.bad)
			}
			continue
		}
		if err != nil {
			t.Errorf("UnmarshalText(%q): %v", tc.in, err)
		}
		if b, err := got.MarshalText(); err != nil || string(b) != tc.in || got.String() != tc.in {
			t.Errorf("MarshalText(%v) = %q, %v; String %q", got, b, err, got.String())
		}
	}
	for _, v := range []textValue{Type(3), Policy(0)} {
		if _, err := v.MarshalText(); !errors.Is(err, ErrConfig) {
			t.Errorf("MarshalText(%v): %v, want ErrConfig", v, err)
		}
	}
	if s := Type(3).String() + " " + Policy(0).String(); s != "type(3) policy(0)" {
		t.Errorf("invalid values print as %q", s)
	}
}

// A Config field of these types round-trips through JSON as its name,
// which is how meta.json and a Kubernetes spec carry it.
func TestTypePolicyJSON(t *testing.T) {
	type spec struct {
		Type   Type   `json:"type"`
		Policy Policy `json:"policy"`
	}
	b, err := json.Marshal(spec{TypeStream, PolicyOverwrite})
	if err != nil || string(b) != `{"type":"stream","policy":"overwrite"}` {
		t.Fatalf("json %s, %v", b, err)
	}
	var s spec
	if err := json.Unmarshal([]byte(`{"type":"pubsub","policy":"block"}`), &s); err != nil || s != (spec{TypePubSub, PolicyBlock}) {
		t.Errorf("unmarshal: %+v, %v", s, err)
	}
	if err := json.Unmarshal([]byte(`{"type":"fifo"}`), &s); !errors.Is(err, ErrConfig) {
		t.Errorf("unmarshal of a bad type: %v, want ErrConfig", err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{" 4096 ", 4096, false},
		{"64K", 64 << 10, false},
		{"64k", 64 << 10, false},
		{"256KiB", 256 << 10, false},
		{"1M", 1 << 20, false},
		{"1MiB", 1 << 20, false},
		{"2MB", 2 << 20, false},
		{"1G", 1 << 30, false},
		{"", 0, true},
		{"M", 0, true},
		{"1.5M", 0, true},
		{"-1", 0, true},
		{"1T", 0, true},
		{"99999999999999999999G", 0, true},
		{"17179869184G", 0, true}, // 2^34 G overflows 64 bits
	} {
		got, err := ParseSize(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrConfig) {
				t.Errorf("ParseSize(%q) = %d, %v; want an error wrapping ErrConfig", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[uint64]string{0: "0", 1000: "1000", 4096: "4K", 1 << 20: "1M", 3 << 30: "3G", 1<<20 + 1: "1048577", 1536 << 10: "1536K"} {
		got := FormatSize(n)
		if got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := ParseSize(got); err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", n, back, err)
		}
	}
}
