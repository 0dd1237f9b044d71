// Package mountpoint mounts and cleans up the agent's mount point: it
// detects mounts in /proc/self/mountinfo, clears a dead FUSE mount left by
// a crashed agent, and prepares a hostPath directory for mount propagation.
package mountpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FSType is the type of the agent's FUSE mounts in mountinfo.
const FSType = "fuse.shimmy"

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID, Parent int
	Point      string // mount point, unescaped
	Root       string
	FSType     string
	Source     string
	Optional   []string // optional fields, e.g. "shared:12"
}

// Shared reports whether the mount is in a shared peer group.
func (m Mount) Shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for space and so on).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseMountInfo reads mountinfo lines (proc(5)).
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountpoint: malformed mountinfo line %q", sc.Text())
		}
		id, _ := strconv.Atoi(f[0])
		parent, _ := strconv.Atoi(f[1])
		out = append(out, Mount{
			ID: id, Parent: parent, Root: unescape(f[3]), Point: unescape(f[4]),
			Optional: f[6:sep], FSType: f[sep+1], Source: unescape(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// Mounts returns the mounts of this process's mount namespace.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// Find returns the topmost mount at path, if any.
func Find(path string) (Mount, bool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Mount{}, false, err
	}
	ms, err := Mounts()
	if err != nil {
		return Mount{}, false, err
	}
	var found Mount
	ok := false
	for _, m := range ms { // later lines are mounted on top of earlier ones
		if m.Point == abs {
			found, ok = m, true
		}
	}
	return found, ok, nil
}

// IsMounted reports whether something is mounted at path.
func IsMounted(path string) (bool, error) {
	_, ok, err := Find(path)
	return ok, err
}

// Unmount unmounts path, lazily (MNT_DETACH) if it is busy.
func Unmount(path string) error {
	err := unix.Unmount(path, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(path, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("mountpoint: unmount %s: %w", path, err)
	}
	return nil
}

// CleanStale makes path ready for a new agent mount: a dead FUSE mount
// (stat fails with ENOTCONN, the agent that served it is gone) or any
// leftover mount of ours is detached, and the directory is created if
// missing. Other filesystems mounted at path, such as the bind mount of
// MakeShared, are left alone.
func CleanStale(path string) error {
	for i := 0; i < 16; i++ { // several agents may have stacked mounts
		_, statErr := os.Stat(path)
		m, mounted, err := Find(path)
		if err != nil {
			return err
		}
		dead := errors.Is(statErr, unix.ENOTCONN)
		if !dead && !(mounted && m.FSType == FSType) {
			break
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("mountpoint: detach stale mount at %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("mountpoint: create %s: %w", path, err)
	}
	return nil
}

// MakeShared makes path a mount point in a shared peer group: it bind
// mounts path onto itself if it is not a mount point yet, then sets
// MS_SHARED. A DaemonSet that mounts FUSE inside a hostPath volume needs
// this (with mountPropagation: Bidirectional on the agent's volume and
// HostToContainer on the pods' volumes) so that the agent's mount, made
// after the pods started, propagates into them.
func MakeShared(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("mountpoint: create %s: %w", path, err)
	}
	m, mounted, err := Find(path)
	if err != nil {
		return err
	}
	if mounted && m.Shared() {
		return nil
	}
	if !mounted {
		if err := unix.Mount(path, path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mountpoint: bind mount %s onto itself: %w", path, err)
		}
	}
	if err := unix.Mount("", path, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mountpoint: make %s shared: %w", path, err)
	}
	return nil
}
