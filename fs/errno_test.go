package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

func TestToErrno(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{wrap(registry.ErrInvalidName), syscall.EINVAL},
		{wrap(registry.ErrInvalidConfig), syscall.EINVAL},
		{fmt.Errorf("%w: %w", registry.ErrInvalidConfig, channel.ErrConfig), syscall.EINVAL},
		{wrap(registry.ErrExists), syscall.EEXIST},
		{wrap(registry.ErrNotFound), syscall.ENOENT},
		{registry.ErrClosed, syscall.ENOENT},
		{wrap(registry.ErrNotEmpty), syscall.ENOTEMPTY},
		{wrap(registry.ErrBusy), syscall.EBUSY},
		{fmt.Errorf("%w: %w", registry.ErrBroken, channel.ErrCorrupt), syscall.EIO},
		{wrap(channel.ErrWouldBlock), syscall.EAGAIN},
		{context.Canceled, syscall.EINTR},
		{wrap(context.DeadlineExceeded), syscall.EINTR},
		{wrap(channel.ErrTooLarge), syscall.EMSGSIZE},
		{channel.ErrNoSlot, syscall.EUSERS},
		{channel.ErrExclusive, syscall.EBUSY},
		{channel.ErrEvicted, syscall.ENOTCONN},
		{channel.ErrClosed, syscall.EBADF},
		{channel.ErrBadMagic, syscall.EIO},
		{channel.ErrVersion, syscall.EIO},
		{&os.PathError{Op: "mkdir", Path: "/x", Err: syscall.ENOSPC}, syscall.ENOSPC},
		{errors.New("something else"), syscall.EIO},
	} {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
