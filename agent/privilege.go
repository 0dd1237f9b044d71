package agent

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrPrivilege is returned by Run when the process lacks CAP_SYS_ADMIN,
// before it has created or touched anything.
var ErrPrivilege = errors.New("agent: needs root (CAP_SYS_ADMIN) to mount the channel filesystem")

// checkPrivilege refuses a process without CAP_SYS_ADMIN in its effective
// set: it could not mount, and an agent that fails only at the mount
// leaves its mount point and state directory behind.
func checkPrivilege() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("%w: reading capabilities: %w", ErrPrivilege, err)
	}
	if data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) == 0 {
		return ErrPrivilege
	}
	return nil
}
