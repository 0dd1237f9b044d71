package registry

import "errors"

// Errors of the registry. Front ends match them with errors.Is and map
// them to their own vocabulary (fs: errnos); a returned error may wrap
// more detail, such as channel.ErrConfig for a configuration the ring
// rejects.
var (
	ErrInvalidName   = errors.New("registry: invalid name")
	ErrExists        = errors.New("registry: already exists")
	ErrNotFound      = errors.New("registry: not found")
	ErrNotEmpty      = errors.New("registry: namespace has channels")
	ErrBusy          = errors.New("registry: channel in use or has carried messages")
	ErrInvalidConfig = errors.New("registry: invalid channel configuration")
	ErrBroken        = errors.New("registry: channel broken")
	ErrClosed        = errors.New("registry: closed")
	// ErrNoSpace: the node has no room for the ring (its tmpfs is full).
	ErrNoSpace = errors.New("registry: no space for the ring")
	// ErrQuota: the namespace's quota (channels, bytes or member slots)
	// does not allow it.
	ErrQuota = errors.New("registry: namespace quota exceeded")
)
