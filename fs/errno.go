package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// errnos maps the registry's and the ring's errors to what a file client
// sees, first match wins (docs/filesystem.md names them).
var errnos = []struct {
	err   error
	errno syscall.Errno
}{
	{registry.ErrInvalidName, syscall.EINVAL},
	{registry.ErrInvalidConfig, syscall.EINVAL},
	{registry.ErrExists, syscall.EEXIST},
	{registry.ErrNotFound, syscall.ENOENT},
	{registry.ErrClosed, syscall.ENOENT},
	{registry.ErrNotEmpty, syscall.ENOTEMPTY},
	{registry.ErrBusy, syscall.EBUSY},
	{registry.ErrBroken, syscall.EIO},
	{registry.ErrNoSpace, syscall.ENOSPC},
	{registry.ErrQuota, syscall.EDQUOT},
	{channel.ErrWouldBlock, syscall.EAGAIN},
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.EINTR},
	{channel.ErrTooLarge, syscall.EMSGSIZE},
	{channel.ErrNoSlot, syscall.EUSERS},
	{channel.ErrExclusive, syscall.EBUSY},
	{channel.ErrEvicted, syscall.ENOTCONN},
	{channel.ErrClosed, syscall.EBADF},
	{channel.ErrCorrupt, syscall.EIO},
	{channel.ErrBadMagic, syscall.EIO},
	{channel.ErrVersion, syscall.EIO},
	{channel.ErrConfig, syscall.EINVAL},
}

// toErrno is the one mapping of errors to errnos in fs. Of an error it
// does not know, an errno inside it (a failed mkdir in the state
// directory, say) is kept; anything else is EIO.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnos {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}
