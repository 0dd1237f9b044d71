package channel

import (
	"fmt"
	"strings"
)

// Type is a channel type, stored as a u32 at OffType of the ring header.
// Its text form ("pubsub", "stream") is the one the ctl and config files,
// meta.json, the CLI flags and the Kubernetes resource use.
type Type uint32

// Policy is an overflow policy, stored as a u32 at OffPolicy of the ring
// header. Its text form is "block" or "overwrite".
type Policy uint32

// Types and Policies list the valid values, in the order help texts name them.
var (
	Types    = []Type{TypePubSub, TypeStream}
	Policies = []Policy{PolicyBlock, PolicyOverwrite}
)

var (
	typeNames   = names[Type]{kind: "type", valid: Types, name: map[Type]string{TypePubSub: "pubsub", TypeStream: "stream"}}
	policyNames = names[Policy]{kind: "policy", valid: Policies, name: map[Policy]string{PolicyBlock: "block", PolicyOverwrite: "overwrite"}}
)

// String returns the type's name, or "type(N)" for a value that is not a type.
func (t Type) String() string { return typeNames.String(t) }

// Valid reports whether t is TypePubSub or TypeStream.
func (t Type) Valid() bool { return typeNames.Valid(t) }

// MarshalText returns the type's name; an invalid type wraps ErrConfig.
func (t Type) MarshalText() ([]byte, error) { return typeNames.Marshal(t) }

// UnmarshalText accepts "pubsub" or "stream"; anything else wraps ErrConfig
// and leaves t as it was.
func (t *Type) UnmarshalText(b []byte) error { return typeNames.Unmarshal(b, t) }

// String returns the policy's name, or "policy(N)" for a value that is not a policy.
func (p Policy) String() string { return policyNames.String(p) }

// Valid reports whether p is PolicyBlock or PolicyOverwrite.
func (p Policy) Valid() bool { return policyNames.Valid(p) }

// MarshalText returns the policy's name; an invalid policy wraps ErrConfig.
func (p Policy) MarshalText() ([]byte, error) { return policyNames.Marshal(p) }

// UnmarshalText accepts "block" or "overwrite"; anything else wraps
// ErrConfig and leaves p as it was.
func (p *Policy) UnmarshalText(b []byte) error { return policyNames.Unmarshal(b, p) }

// names is the text form of an enumeration stored as a u32.
type names[T ~uint32] struct {
	kind  string // "type", "policy": names the value in messages
	valid []T
	name  map[T]string
}

func (n names[T]) String(v T) string {
	if s, ok := n.name[v]; ok {
		return s
	}
	return fmt.Sprintf("%s(%d)", n.kind, uint32(v))
}

func (n names[T]) Valid(v T) bool { _, ok := n.name[v]; return ok }

func (n names[T]) Marshal(v T) ([]byte, error) {
	if !n.Valid(v) {
		return nil, fmt.Errorf("%w: %s (want %s)", ErrConfig, n.String(v), n.choices())
	}
	return []byte(n.name[v]), nil
}

func (n names[T]) Unmarshal(b []byte, v *T) error {
	for _, c := range n.valid {
		if n.name[c] == string(b) {
			*v = c
			return nil
		}
	}
	return fmt.Errorf("%w: %s %q (want %s)", ErrConfig, n.kind, b, n.choices())
}

// choices renders the valid values for a message: "a or b".
func (n names[T]) choices() string {
	s := make([]string, len(n.valid))
	for i, v := range n.valid {
		s[i] = n.name[v]
	}
	return strings.Join(s, " or ")
}
