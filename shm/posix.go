package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxNameLen is NAME_MAX: the longest single path element Linux accepts.
const maxNameLen = 255

// ValidName reports (as an error wrapping ErrInvalidName) whether name can be
// used with CreatePOSIX. Names must be a single path element so an object can
// never be created outside Options.Dir.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: name is %d bytes, limit %d", ErrInvalidName, len(name), maxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: %q contains '/' or NUL", ErrInvalidName, name)
	}
	return nil
}

// fsKind classifies the filesystem behind a statfs result.
func fsKind(st *unix.Statfs_t) (shared, huge bool) {
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		return true, false
	case unix.HUGETLBFS_MAGIC:
		return true, true
	}
	return false, false
}

// CreatePOSIX creates the object name in opts.Dir, sizes it to size and maps
// it. Unless opts.Exclusive is set, an existing object is opened and mapped
// whole instead (never resized: if it is smaller than size the result is
// ErrTooSmall, since another party owns its layout).
//
// size must be positive and a multiple of the page size, or of the huge page
// size when Dir is a hugetlbfs mount (ErrInvalidSize). Dir must be tmpfs or
// hugetlbfs (ErrNotShared); with opts.HugePages it must be hugetlbfs
// (ErrHugePages). The memory of a new object is reserved with fallocate, so
// a full filesystem fails here with ErrNoSpace (or ErrHugePages) rather than
// with SIGBUS on first touch. The mode is applied exactly, ignoring umask.
func CreatePOSIX(name string, size int64, opts Options) (*Segment, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	dir := opts.dir()
	path := filepath.Join(dir, name)

	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("shm: create %s: directory %s: %w", path, dir, ErrNotFound)
		}
		return nil, fmt.Errorf("shm: create %s: statfs %s: %w", path, dir, err)
	}
	shared, huge := fsKind(&sfs)
	if opts.HugePages && !huge {
		return nil, fmt.Errorf("shm: create %s: %s is not a hugetlbfs mount (fs magic %#x): %w", path, dir, uint32(sfs.Type), ErrHugePages)
	}
	if !shared {
		return nil, fmt.Errorf("shm: create %s: %s is not tmpfs or hugetlbfs (fs magic %#x): %w", path, dir, uint32(sfs.Type), ErrNotShared)
	}
	align := PageSize()
	if huge {
		align = sfs.Bsize // hugetlbfs reports its huge page size as block size
	}
	if err := checkSize("shm: create "+path, size, align); err != nil {
		return nil, err
	}

	f, created, err := openOrCreate(path, opts)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Segment, error) {
		f.Close()
		if created {
			os.Remove(path)
		}
		return nil, err
	}
	if created {
		if err := f.Chmod(os.FileMode(opts.perm())); err != nil {
			return fail(fmt.Errorf("shm: create %s: chmod: %w", path, err))
		}
		if err := reserve(f, path, size, huge); err != nil {
			return fail(err)
		}
	}
	seg, err := mapFile(f, path, size)
	if err != nil {
		return fail(err)
	}
	return seg, nil
}

// openOrCreate opens path, creating it exclusively if possible so the caller
// knows whether it owns (and may size) the object. O_NOFOLLOW stops a planted
// symlink in a world-writable /dev/shm from redirecting us.
func openOrCreate(path string, opts Options) (f *os.File, created bool, err error) {
	const flags = os.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	for range 10 {
		f, err = os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, os.FileMode(opts.perm()))
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, false, fmt.Errorf("shm: create %s: %w", path, err)
		}
		if opts.Exclusive {
			return nil, false, fmt.Errorf("shm: create %s: %w", path, ErrExists)
		}
		f, err = os.OpenFile(path, flags, 0)
		if err == nil {
			return f, false, nil
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, false, fmt.Errorf("shm: create %s: is a symlink: %w", path, ErrNotShared)
		}
		if errors.Is(err, unix.EISDIR) {
			return nil, false, fmt.Errorf("shm: create %s: is a directory: %w", path, ErrNotShared)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, false, fmt.Errorf("shm: create %s: %w", path, err)
		}
		// Removed between the two opens; try creating again.
	}
	return nil, false, fmt.Errorf("shm: create %s: object keeps appearing and disappearing", path)
}

// reserve sizes a newly created object and allocates its pages up front.
func reserve(f *os.File, path string, size int64, huge bool) error {
	fd := int(f.Fd())
	if err := unix.Ftruncate(fd, size); err != nil {
		return fmt.Errorf("shm: create %s: ftruncate to %d: %w", path, size, err)
	}
	err := unix.Fallocate(fd, 0, 0, size)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		return nil // old kernel: fall back to lazy allocation
	case huge && (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM)):
		return fmt.Errorf("shm: create %s: cannot reserve %d bytes of huge pages (%v): %w", path, size, err, ErrHugePages)
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM):
		return fmt.Errorf("shm: create %s: cannot reserve %d bytes (%v): %w", path, size, err, ErrNoSpace)
	default:
		return fmt.Errorf("shm: create %s: fallocate %d bytes: %w", path, size, err)
	}
}

// mapFile checks that f is a regular file of at least minSize bytes and maps
// all of it. It takes ownership of f only on success.
func mapFile(f *os.File, path string, minSize int64) (*Segment, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("shm: %s: fstat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("shm: %s: not a regular file: %w", path, ErrNotShared)
	}
	size := st.Size
	if size < minSize {
		return nil, fmt.Errorf("shm: %s: size %d, need %d: %w", path, size, minSize, ErrTooSmall)
	}
	if size == 0 {
		return nil, fmt.Errorf("shm: %s: object is empty: %w", path, ErrTooSmall)
	}
	if err := checkSize("shm: "+path, size, 1); err != nil {
		return nil, err
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: %s: mmap %d bytes: %w", path, size, err)
	}
	return &Segment{
		kind: POSIX,
		path: path,
		id:   -1,
		file: f,
		dev:  st.Dev,
		ino:  st.Ino,
		data: data,
		size: size,
	}, nil
}

// OpenPOSIX opens an existing object by full path and maps the whole file.
// minSize > 0 requires at least that many bytes (ErrTooSmall). A missing file
// gives ErrNotFound; a file that is not on tmpfs or hugetlbfs, or is not a
// regular file, gives ErrNotShared, because mapping it would not give the
// caller memory shared with the channel's other parties.
func OpenPOSIX(path string, minSize int64) (*Segment, error) {
	// Stat first so we never open (with side effects) a device or FIFO.
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("shm: open %s: %w", path, ErrNotFound)
		}
		return nil, fmt.Errorf("shm: open %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("shm: open %s: not a regular file (mode %s): %w", path, fi.Mode(), ErrNotShared)
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("shm: open %s: %w", path, ErrNotFound)
		}
		return nil, fmt.Errorf("shm: open %s: %w", path, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: open %s: fstatfs: %w", path, err)
	}
	if shared, _ := fsKind(&sfs); !shared {
		f.Close()
		return nil, fmt.Errorf("shm: open %s: filesystem magic %#x is not tmpfs or hugetlbfs: %w", path, uint32(sfs.Type), ErrNotShared)
	}
	seg, err := mapFile(f, path, minSize)
	if err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

// Rename gives a POSIX object the name name in its directory, replacing
// whatever had that name (rename(2) is atomic), so that a caller can build
// a new object beside the one it replaces and swap them in one step. The
// mapping is unaffected.
func (s *Segment) Rename(name string) error {
	if s.kind != POSIX {
		return fmt.Errorf("shm: rename %s: not a POSIX object: %w", s, ErrNotShared)
	}
	if err := ValidName(name); err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(s.path), name)
	if err := os.Rename(s.path, path); err != nil {
		return fmt.Errorf("shm: rename %s: %w", s.path, err)
	}
	s.path = path
	return nil
}

// CloseFile closes the open file of a POSIX object and keeps the mapping,
// so that a process holding many idle segments does not hold a descriptor
// for each (File is nil afterwards; OpenFile gives a new one).
func (s *Segment) CloseFile() error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	if err != nil {
		return fmt.Errorf("shm: close %s: %w", s.path, err)
	}
	return nil
}

// OpenFile opens the POSIX object again read-write, for a caller that
// needs a descriptor (FUSE passthrough); the caller closes it. If the path
// now names another file than the mapped one, it fails with ErrNotFound.
func (s *Segment) OpenFile() (*os.File, error) {
	if s.kind != POSIX {
		return nil, fmt.Errorf("shm: open %s: not a POSIX object: %w", s, ErrNotShared)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("shm: open %s: %w", s.path, ErrNotFound)
		}
		return nil, fmt.Errorf("shm: open %s: %w", s.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Dev != s.dev || st.Ino != s.ino {
		f.Close()
		return nil, fmt.Errorf("shm: open %s: path now names a different file: %w", s.path, ErrNotFound)
	}
	return f, nil
}
