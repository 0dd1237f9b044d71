package registry

import "fmt"

// MaxNameLen bounds namespace and channel names.
const MaxNameLen = 63

// ValidName reports whether name may name a namespace or channel:
// [A-Za-z0-9._-], 1 to 63 characters, not starting with '.'. It is the one
// rule every front end (mount, CLI, Kubernetes) applies.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// CheckName returns nil for a valid name and an error wrapping
// ErrInvalidName otherwise.
func CheckName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: %q (want 1 to %d of [A-Za-z0-9._-], not starting with '.')", ErrInvalidName, name, MaxNameLen)
	}
	return nil
}
