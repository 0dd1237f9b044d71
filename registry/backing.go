package registry

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/shimmy-dev/shimmy/shm"
)

// Backing is the kind of memory behind a channel's ring.
type Backing string

const (
	// BackingPOSIX: a POSIX shm file in the state directory (the default).
	// The FUSE tree serves it as the channel's ring file (passthrough).
	BackingPOSIX Backing = "posix"
	// BackingSysV: a SysV segment of the agent's (the host's) IPC
	// namespace, for clients that attach by key or id as in the paper. It
	// has no file, so it cannot be mapped through the mount; the data
	// files work as for any channel.
	BackingSysV Backing = "sysv"
)

func (b Backing) String() string { return string(b) }

// UnmarshalText reads "posix" or "sysv"; other values wrap ErrInvalidConfig.
func (b *Backing) UnmarshalText(t []byte) error {
	switch v := Backing(t); v {
	case BackingPOSIX, BackingSysV:
		*b = v
		return nil
	}
	return fmt.Errorf("%w: backing %q (want posix or sysv)", ErrInvalidConfig, t)
}

// BackingInfo says where a channel's ring lives.
type BackingInfo struct {
	Kind    Backing
	Path    string // POSIX: the shm file
	SysVKey int    // SysV: the key (0: IPC_PRIVATE, attach by id only)
	SysVID  int    // SysV: the shmid
}

// sysvMeta records a SysV ring in meta.json, so that a new agent attaches
// it again.
type sysvMeta struct {
	Key int `json:"key"`
	ID  int `json:"id"`
}

// sysvProj is the ftok project byte of channel segments ('S').
const sysvProj = 'S'

// createRing makes the memory for a ring of size bytes (POSIX: the file
// name in the channel's state directory), readable and writable by the
// owner of the channel (the caller sets it afterwards with SetOwner).
func (ch *Channel) createRing(kind Backing, name string, size int64) (*shm.Segment, error) {
	opts := shm.Options{Dir: ch.dir, Mode: os.FileMode(DataMode(ch.meta.Mode)) | 0o600, Exclusive: true}
	if kind != BackingSysV {
		if name != ringFile {
			os.Remove(filepath.Join(ch.dir, name)) // left by a crash between create and rename
		}
		return shm.CreatePOSIX(name, size, opts)
	}
	// A key derived from the channel's directory, as ftok(3) would; if
	// another segment holds it, the ring is reachable by id only.
	if key, err := shm.Ftok(ch.dir, sysvProj); err == nil {
		if seg, err := shm.CreateSysV(key, size, opts); err == nil {
			return seg, nil
		}
	}
	return shm.CreateSysV(0, size, opts)
}

// openRing maps the existing ring memory that m records.
func (ch *Channel) openRing(m meta, minSize int64) (*shm.Segment, error) {
	if m.SysV != nil {
		return shm.AttachSysV(m.SysV.ID, minSize)
	}
	return shm.OpenPOSIX(filepath.Join(ch.dir, ringFile), minSize)
}

// Backing says where the ring lives.
func (ch *Channel) Backing() BackingInfo {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if s := ch.meta.SysV; s != nil {
		return BackingInfo{Kind: BackingSysV, SysVKey: s.Key, SysVID: s.ID}
	}
	return BackingInfo{Kind: BackingPOSIX, Path: filepath.Join(ch.dir, ringFile)}
}
