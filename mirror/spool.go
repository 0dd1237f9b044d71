package mirror

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// spool is the file behind an importer's spool log (hwmRec): a circular
// buffer in which log offset o lies at o mod size. The records between
// the mark's Have and Tail are there; a write never reaches Have again
// (the window the receiver grants keeps the log within size).
type spool struct {
	f    *os.File
	size uint64
}

// openSpool opens (creating) the spool file at path. A file that holds
// records (live bytes) keeps its size, which places them; an empty one
// takes size.
func openSpool(path string, size, live uint64) (*spool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mirror: state: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mirror: state: %w", err)
	}
	sp := &spool{f: f}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mirror: state: %w", err)
	}
	if live > 0 && uint64(fi.Size()) >= live {
		sp.size = uint64(fi.Size())
		return sp, nil
	}
	if err := sp.resize(size); err != nil {
		f.Close()
		return nil, err
	}
	return sp, nil
}

// resize gives an empty spool size bytes, all of them reserved in the
// tmpfs at once, as rings are (docs/limits.md): a full tmpfs fails the
// flow when it opens, not a write in the middle of a link's batches.
func (sp *spool) resize(size uint64) error {
	if err := sp.f.Truncate(0); err != nil {
		return fmt.Errorf("mirror: spool: %w", err)
	}
	if err := unix.Fallocate(int(sp.f.Fd()), 0, 0, int64(size)); err != nil {
		return fmt.Errorf("mirror: spool of %d bytes: %w", size, err)
	}
	sp.size = size
	return nil
}

// writeAt writes b at log offset o, in two writes where it wraps.
func (sp *spool) writeAt(o uint64, b []byte) error {
	return sp.io(o, b, func(p []byte, off int64) (int, error) { return sp.f.WriteAt(p, off) })
}

// readAt fills b from log offset o.
func (sp *spool) readAt(o uint64, b []byte) error {
	return sp.io(o, b, func(p []byte, off int64) (int, error) { return sp.f.ReadAt(p, off) })
}

func (sp *spool) io(o uint64, b []byte, f func([]byte, int64) (int, error)) error {
	if uint64(len(b)) > sp.size {
		return fmt.Errorf("mirror: spool: %d bytes for a spool of %d", len(b), sp.size)
	}
	off := o % sp.size
	n := min(uint64(len(b)), sp.size-off)
	if _, err := f(b[:n], int64(off)); err != nil {
		return fmt.Errorf("mirror: spool: %w", err)
	}
	if n < uint64(len(b)) {
		if _, err := f(b[n:], 0); err != nil {
			return fmt.Errorf("mirror: spool: %w", err)
		}
	}
	return nil
}

func (sp *spool) close() error { return sp.f.Close() }
