package shm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// shmHugeTLB is SHM_HUGETLB from <linux/shm.h>; x/sys/unix lacks it.
	shmHugeTLB = 0o4000
	// shmDest is SHM_DEST: set in shm_perm.mode once IPC_RMID was issued.
	shmDest = 0o1000
)

// CreateSysV creates a SysV segment of size bytes for key and attaches it.
// Use key IPC_PRIVATE (0) for a fresh segment only reachable through its id.
// For any other key an existing segment is reused unless opts.Exclusive is
// set (ErrExists); an existing one smaller than size gives ErrTooSmall.
// opts.Mode sets the permissions and opts.HugePages asks for SHM_HUGETLB
// (ErrHugePages if the kernel cannot supply them). size must be positive and
// a multiple of the page size (huge page size with HugePages). opts.Dir is
// ignored.
func CreateSysV(key int, size int64, opts Options) (*Segment, error) {
	what := fmt.Sprintf("shm: create sysv key %#x", key)
	align := PageSize()
	if opts.HugePages {
		hp, err := HugePageSize()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		align = hp
	}
	if err := checkSize(what, size, align); err != nil {
		return nil, err
	}
	flags := unix.IPC_CREAT | unix.IPC_EXCL | int(opts.perm())
	if opts.HugePages {
		flags |= shmHugeTLB
	}

	for range 10 {
		if key != unix.IPC_PRIVATE && !opts.Exclusive {
			// Reuse an existing segment, but never one too small for us.
			id, err := unix.SysvShmGet(key, 0, 0)
			if err == nil {
				seg, err := attach(id, size)
				if errors.Is(err, ErrNotFound) {
					continue // removed meanwhile; try to create
				}
				return seg, err
			}
			if !errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		id, err := unix.SysvShmGet(key, int(size), flags)
		if err != nil {
			switch {
			case errors.Is(err, unix.EEXIST) && opts.Exclusive:
				return nil, fmt.Errorf("%s: %w", what, ErrExists)
			case errors.Is(err, unix.EEXIST):
				continue // created by someone else meanwhile; reuse it
			case opts.HugePages && (errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSPC)):
				return nil, fmt.Errorf("%s: %d bytes with SHM_HUGETLB (%v): %w", what, size, err, ErrHugePages)
			case errors.Is(err, unix.EINVAL):
				return nil, fmt.Errorf("%s: %d bytes outside SHMMIN..SHMMAX (%v): %w", what, size, err, ErrInvalidSize)
			case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM):
				return nil, fmt.Errorf("%s: %d bytes (%v): %w", what, size, err, ErrNoSpace)
			default:
				return nil, fmt.Errorf("%s: %d bytes: %w", what, size, err)
			}
		}
		seg, err := attach(id, size)
		if err != nil {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil) // ours, and unusable
			return nil, err
		}
		seg.key = key
		return seg, nil
	}
	return nil, fmt.Errorf("%s: segment keeps appearing and disappearing", what)
}

// AttachSysV attaches the existing segment id read-write. minSize > 0
// requires at least that many bytes (ErrTooSmall). An id that does not exist
// or is already marked for removal gives ErrNotFound, so a client cannot
// attach to a channel that is being torn down.
func AttachSysV(id int, minSize int64) (*Segment, error) {
	return attach(id, minSize)
}

func attach(id int, minSize int64) (*Segment, error) {
	what := fmt.Sprintf("shm: attach sysv id %d", id)
	var desc unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err != nil {
		return nil, sysvErr(what, err)
	}
	if desc.Perm.Mode&shmDest != 0 {
		return nil, fmt.Errorf("%s: marked for removal: %w", what, ErrNotFound)
	}
	if int64(desc.Segsz) < minSize {
		return nil, fmt.Errorf("%s: size %d, need %d: %w", what, desc.Segsz, minSize, ErrTooSmall)
	}
	data, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return nil, sysvErr(what, err)
	}
	return &Segment{
		kind: SysV,
		id:   id,
		key:  int(int32(desc.Perm.Key)),
		data: data,
		size: int64(len(data)),
	}, nil
}

// Ftok derives a SysV key from an existing path and a project byte, as
// ftok(3) does: the low 8 bits of proj, of the device's minor number and
// the low 16 bits of the inode. Different paths may share a key; create
// with Options.Exclusive to find out.
func Ftok(path string, proj byte) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("shm: ftok %s: %w", path, err)
	}
	return int(int32(uint32(proj)<<24 | (unix.Minor(st.Dev)&0xff)<<16 | uint32(st.Ino&0xffff))), nil
}

// sysvErr maps the errno of shmctl/shmat on a bad id to ErrNotFound.
func sysvErr(what string, err error) error {
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
