package shm

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Kind says which kernel mechanism backs a Segment, because removal and
// addressing (path versus id) differ between them.
type Kind int

const (
	// POSIX is a file on tmpfs or hugetlbfs, addressed by path.
	POSIX Kind = iota + 1
	// SysV is a System V segment (shmget/shmat), addressed by id.
	SysV
)

// String returns "posix", "sysv" or "Kind(n)" for use in logs and errors.
func (k Kind) String() string {
	switch k {
	case POSIX:
		return "posix"
	case SysV:
		return "sysv"
	default:
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// DefaultDir is where POSIX objects are created when Options.Dir is empty;
// it is the tmpfs that shm_open(3) uses, so non-Go peers find them too.
const DefaultDir = "/dev/shm"

// DefaultMode is the permission used when Options.Mode is zero: private to
// the owner unless the caller explicitly opts into sharing.
const DefaultMode os.FileMode = 0o600

// Options control segment creation. The zero value creates a 0600 object in
// /dev/shm (or a 0600 SysV segment) on normal pages, reusing an existing one.
type Options struct {
	// Dir is the directory for POSIX objects; default DefaultDir. It must be
	// a tmpfs or hugetlbfs mount, otherwise creation fails with ErrNotShared.
	Dir string
	// Mode holds the permission bits; default DefaultMode. It is applied
	// exactly (the umask is not), so group or world sharing works as asked.
	Mode os.FileMode
	// HugePages backs the segment with huge pages to cut TLB pressure on big
	// rings. POSIX: Dir must be a hugetlbfs mount; SysV: SHM_HUGETLB. Sizes
	// must then be multiples of the huge page size. Fails with ErrHugePages
	// when huge pages cannot be had.
	HugePages bool
	// Exclusive makes creation fail with ErrExists instead of reusing an
	// existing object, for callers that must own the segment they create.
	Exclusive bool
}

func (o Options) dir() string {
	if o.Dir == "" {
		return DefaultDir
	}
	return o.Dir
}

func (o Options) perm() uint32 {
	if o.Mode.Perm() == 0 {
		return uint32(DefaultMode)
	}
	return uint32(o.Mode.Perm())
}

// Segment is one mapped region of shared memory. Its methods are safe for
// concurrent use; the memory returned by Bytes is of course not synchronised.
type Segment struct {
	kind Kind
	path string // POSIX only
	id   int    // SysV only; -1 for POSIX
	key  int    // SysV only: the key it was created with (0: IPC_PRIVATE)
	file *os.File
	dev  uint64 // POSIX: identity of the mapped file, so Remove does not
	ino  uint64 // unlink a different object that replaced it at path

	mu   sync.Mutex
	data []byte // nil once closed
	size int64
}

// Bytes returns the mapping (MAP_SHARED, read-write). Writes are visible to
// every other mapping of the same segment. It returns nil after Close; any
// slice obtained earlier must not be used after Close (it would fault).
func (s *Segment) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

// Size returns the size of the mapping in bytes, which is the size of the
// whole object (it may exceed the size a caller asked for if the object
// already existed and was bigger).
func (s *Segment) Size() int64 { return s.size }

// Kind reports whether the segment is a POSIX object or a SysV segment.
func (s *Segment) Kind() Kind { return s.kind }

// Path returns the full file path of a POSIX object, or "" for SysV.
func (s *Segment) Path() string { return s.path }

// ID returns the SysV shmid that clients attach by, or -1 for POSIX.
func (s *Segment) ID() int { return s.id }

// Key returns the SysV key of the segment (0 for IPC_PRIVATE and POSIX).
func (s *Segment) Key() int { return s.key }

// SetOwner gives the segment an owner, group and permission bits: a POSIX
// object's file is chowned and chmoded, a SysV segment's ipc_perm is set
// (IPC_SET), so that the parties allowed to use it may open or attach it.
func (s *Segment) SetOwner(uid, gid int, perm os.FileMode) error {
	if s.kind == SysV {
		var desc unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(s.id, unix.IPC_STAT, &desc); err != nil {
			return sysvErr(fmt.Sprintf("shm: set owner of sysv id %d", s.id), err)
		}
		desc.Perm.Uid, desc.Perm.Gid = uint32(uid), uint32(gid)
		desc.Perm.Mode = desc.Perm.Mode&^0o777 | uint32(perm.Perm())
		if _, err := unix.SysvShmCtl(s.id, unix.IPC_SET, &desc); err != nil {
			return sysvErr(fmt.Sprintf("shm: set owner of sysv id %d", s.id), err)
		}
		return nil
	}
	f := s.file
	if f == nil { // CloseFile closed it
		var err error
		if f, err = s.OpenFile(); err != nil {
			return err
		}
		defer f.Close()
	}
	return errors.Join(f.Chown(uid, gid), f.Chmod(perm.Perm()))
}

// File returns the open file of a POSIX object, so a FUSE layer can pass it
// through to clients; nil for SysV and after CloseFile. The Segment owns
// the file: the caller must not close it, and it is closed by Close.
func (s *Segment) File() *os.File { return s.file }

// String describes the segment for logs.
func (s *Segment) String() string {
	if s.kind == SysV {
		return fmt.Sprintf("sysv shm id %d (%d bytes)", s.id, s.size)
	}
	return fmt.Sprintf("posix shm %s (%d bytes)", s.path, s.size)
}

// Close unmaps (SysV: detaches) the segment and closes its file. The memory
// itself stays so other parties keep working; use Remove to free it. Close is
// idempotent: later calls return nil.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.data != nil {
		var err error
		if s.kind == SysV {
			err = unix.SysvShmDetach(s.data)
		} else {
			err = unix.Munmap(s.data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("shm: unmap %s: %w", s, err))
		}
		s.data = nil
	}
	if s.file != nil {
		if err := s.file.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("shm: close %s: %w", s.path, err))
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the segment's name so no new party can open it: POSIX
// unlinks the file, SysV marks the id for removal (IPC_RMID). Existing
// mappings, including this one, stay valid; the kernel frees the memory once
// the last one goes away. For POSIX the name removed is Path (if that is a
// symlink, the link itself). Remove is safe before or after Close. If the object
// is already gone, or a POSIX path now names a different file, it returns an
// error wrapping ErrNotFound and removes nothing.
func (s *Segment) Remove() error {
	if s.kind == SysV {
		if _, err := unix.SysvShmCtl(s.id, unix.IPC_RMID, nil); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
				return fmt.Errorf("shm: remove sysv id %d: %w", s.id, ErrNotFound)
			}
			return fmt.Errorf("shm: remove sysv id %d: %w", s.id, err)
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(s.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("shm: remove %s: %w", s.path, ErrNotFound)
		}
		return fmt.Errorf("shm: remove %s: %w", s.path, err)
	}
	if st.Dev != s.dev || st.Ino != s.ino {
		return fmt.Errorf("shm: remove %s: path now names a different file: %w", s.path, ErrNotFound)
	}
	if err := unix.Unlink(s.path); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("shm: remove %s: %w", s.path, ErrNotFound)
		}
		return fmt.Errorf("shm: remove %s: %w", s.path, err)
	}
	return nil
}

// PageSize returns the system page size; segment sizes must be multiples of
// it so that mappings cover whole pages and no peer sees a short tail.
func PageSize() int64 { return int64(os.Getpagesize()) }

// HugePageSize returns the default huge page size from /proc/meminfo, or an
// error wrapping ErrHugePages if the kernel does not report one.
func HugePageSize() (int64, error) {
	proc, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrHugePages, err)
	}
	mi, err := proc.Meminfo()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrHugePages, err)
	}
	if mi.HugepagesizeBytes == nil || *mi.HugepagesizeBytes == 0 || *mi.HugepagesizeBytes > math.MaxInt64 {
		return 0, fmt.Errorf("%w: no Hugepagesize in /proc/meminfo", ErrHugePages)
	}
	return int64(*mi.HugepagesizeBytes), nil
}

// RoundUp rounds size up to a multiple of the page size, for callers that
// derive a segment size from a payload size. Non-positive sizes give 0.
func RoundUp(size int64) int64 { return RoundUpTo(size, PageSize()) }

// RoundUpTo rounds size up to a multiple of align (a power of two, e.g. from
// HugePageSize). Non-positive sizes give 0; it returns -1 on overflow.
func RoundUpTo(size, align int64) int64 {
	if size <= 0 {
		return 0
	}
	if size > math.MaxInt64-(align-1) {
		return -1
	}
	return (size + align - 1) &^ (align - 1)
}

// checkSize validates a requested segment size against the page size align.
func checkSize(what string, size, align int64) error {
	switch {
	case size <= 0:
		return fmt.Errorf("%s: size %d must be positive: %w", what, size, ErrInvalidSize)
	case size%align != 0:
		return fmt.Errorf("%s: size %d is not a multiple of the page size %d: %w", what, size, align, ErrInvalidSize)
	case uint64(size) > uint64(math.MaxInt):
		return fmt.Errorf("%s: size %d does not fit the address space: %w", what, size, ErrInvalidSize)
	}
	return nil
}
