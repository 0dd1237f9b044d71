package channel

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MapFile maps a ring file whole, shared and read-write, and opens it: the
// `ring` file of a channel directory (through the mount, the agent serves
// it with passthrough, so this is the same memory every member maps) or a
// backing shm file. Close releases this process's members and unmaps.
func MapFile(path string) (*Ring, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	r, err := Open(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.unmap = func() error { return unix.Munmap(mem) }
	return r, nil
}
