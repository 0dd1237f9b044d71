package shm

import "errors"

// Sentinel errors. Functions wrap them with %w and add the path or id and the
// sizes involved; test for them with errors.Is.
var (
	// ErrNotFound means the object, segment id or directory does not exist
	// (or a SysV segment is already marked for removal), so there is nothing
	// to attach to.
	ErrNotFound = errors.New("shm: segment not found")

	// ErrTooSmall means an existing segment is smaller than the caller needs.
	// The package never grows a segment it did not create, because another
	// party may already be using it with the old layout.
	ErrTooSmall = errors.New("shm: segment smaller than required")

	// ErrExists means Options.Exclusive was set and the object already exists.
	ErrExists = errors.New("shm: segment already exists")

	// ErrInvalidSize means a size was not positive, not a multiple of the
	// (huge) page size, or does not fit the address space.
	ErrInvalidSize = errors.New("shm: invalid size")

	// ErrHugePages means huge pages were requested but cannot be used: the
	// directory is not a hugetlbfs mount, or the kernel has no huge pages to
	// give (none configured, all in use, or no permission).
	ErrHugePages = errors.New("shm: huge pages unavailable")

	// ErrNotShared means a path is not on a tmpfs or hugetlbfs mount (or is
	// not a regular file). Mapping such a file would give disk-backed memory
	// with writeback, which is not what a channel peer expects.
	ErrNotShared = errors.New("shm: not a shared-memory file (not on tmpfs or hugetlbfs)")

	// ErrInvalidName means a POSIX object name is not a single, valid path
	// element; names are confined to Options.Dir so callers cannot escape it.
	ErrInvalidName = errors.New("shm: invalid segment name")

	// ErrNoSpace means the filesystem backing a POSIX object could not
	// reserve the requested memory. It is reported at create time so that a
	// full /dev/shm does not later surface as SIGBUS on first touch.
	ErrNoSpace = errors.New("shm: not enough shared memory")
)
