package mirror

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// state is the mirror's directory: marks (high-water marks of imports,
// acknowledged positions of exports) and stream outboxes, one file each.
type state struct{ dir string }

func openState(dir string) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mirror: state directory: %w", err)
	}
	return &state{dir: dir}, nil
}

// chanKey names a channel (and a stream queue: 0 for pubsub).
type chanKey struct {
	NS, Ch string
	Q      int
}

func (k chanKey) String() string { return k.NS + "/" + k.Ch + ":" + strconv.Itoa(k.Q) }

// path returns the file of kind for peer and k. Identities come from
// certificates: hex keeps any of them one safe path element.
func (s *state) path(kind, peer string, k chanKey) string {
	return filepath.Join(s.dir, kind, hex.EncodeToString([]byte(peer)), k.NS, k.Ch+"."+strconv.Itoa(k.Q))
}

// markRec is a stored position: an epoch and an extended position (for
// streams, Seq is an outbox id).
type markRec struct{ Epoch, Seq, Units uint64 }

const markLen = 32 // epoch, seq, units, crc32 of them, zero

// mark is one position stored in its own file, rewritten in place with
// one pwrite (a write to tmpfs is never torn by the writer's death).
type mark struct{ f *os.File }

// openMark opens (creating) the mark at path; ok is false if it held
// nothing valid.
func openMark(path string) (*mark, markRec, bool, error) {
	mk, b, err := openMarkFile(path, markLen)
	if err != nil {
		return nil, markRec{}, false, err
	}
	r, ok := decodeMark(b)
	return mk, r, ok, nil
}

// openMarkFile opens (creating) the file at path and reads up to n bytes
// of it.
func openMarkFile(path string, n int) (*mark, []byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("mirror: state: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("mirror: state: %w", err)
	}
	b := make([]byte, n)
	k, _ := f.ReadAt(b, 0)
	return &mark{f: f}, b[:k], nil
}

// mapFile maps the state file at path (what names it in errors), shared
// and writable, creating it and its directory: at least n bytes, in whole
// pages (sparse until written), or all of a file a previous run made
// larger.
func mapFile(path string, n int, what string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mirror: state: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mirror: %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("mirror: %s: %w", what, err)
	}
	page := int64(os.Getpagesize())
	size := max(st.Size(), (int64(n)+page-1)&^(page-1))
	if size != st.Size() {
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("mirror: %s: %w", what, err)
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mirror: %s: %w", what, err)
	}
	return mem, nil
}

func decodeMark(b []byte) (markRec, bool) {
	if len(b) != markLen || crc32.ChecksumIEEE(b[:24]) != binary.LittleEndian.Uint32(b[24:]) {
		return markRec{}, false
	}
	return markRec{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])}, true
}

func (m *mark) store(r markRec) error {
	var b [markLen]byte
	encodeMark(b[:], r)
	return m.write(b[:])
}

// encodeMark puts r into b[:markLen].
func encodeMark(b []byte, r markRec) {
	binary.LittleEndian.PutUint64(b, r.Epoch)
	binary.LittleEndian.PutUint64(b[8:], r.Seq)
	binary.LittleEndian.PutUint64(b[16:], r.Units)
	binary.LittleEndian.PutUint32(b[24:], crc32.ChecksumIEEE(b[:24]))
	binary.LittleEndian.PutUint32(b[28:], 0)
}

// write replaces the start of the file with b, in one pwrite.
func (m *mark) write(b []byte) error {
	if _, err := m.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("mirror: store mark: %w", err)
	}
	return nil
}

func (m *mark) close() error { return m.f.Close() }
