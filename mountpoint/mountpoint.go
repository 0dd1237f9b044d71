// Package mountpoint mounts and cleans up the agent's mount point: it
// detects mounts in /proc/self/mountinfo, clears a dead FUSE mount left by
// a crashed agent, takes a live one down (aborting its FUSE connection if
// files are still open), prepares a hostPath directory for mount
// propagation, and keeps the pod directory's per-namespace binds
// (PodBinds).
package mountpoint

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// FSType is the type of the agent's FUSE mounts in mountinfo.
const FSType = "fuse.shimmy"

// The well-known host paths, owned here so that the agent, the webhook
// and the CLI agree on them.
const (
	// Default is the agent's mount point (shimmy agent --mount).
	Default = "/run/shimmy"
	// DefaultPodDir is the pod directory of an agent run with Kubernetes
	// (shimmy agent --pod-dir): the hostPath of pods' volumes (PodBinds).
	DefaultPodDir = "/run/shimmy-pods"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID, Parent int
	Point      string // mount point, unescaped
	Root       string
	FSType     string
	Source     string
	Optional   []string // optional fields, e.g. "shared:12"
	Dev        uint64   // the filesystem's device, as stat reports it
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

// ParseMountInfo reads mountinfo lines (proc(5)).
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	infos, err := mountinfo.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	out := make([]Mount, 0, len(infos))
	for _, in := range infos {
		out = append(out, Mount{
			ID: in.ID, Parent: in.Parent, Root: in.Root, Point: in.Mountpoint,
			Optional: strings.Fields(in.Optional), FSType: in.FSType, Source: in.Source,
			Dev: unix.Mkdev(uint32(in.Major), uint32(in.Minor)),
		})
	}
	return out, nil
}

// Mounts returns the mounts of this process's mount namespace.
func Mounts() ([]Mount, error) { return mountsOf("/proc/self/mountinfo") }

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

// Device returns the device number of the filesystem mounted at path (for
// a FUSE mount, its minor number is the connection id in fusectl).
func Device(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("mountpoint: stat %s: %w", path, err)
	}
	return st.Dev, nil
}

// TeardownResult says how Teardown took a mount down.
type TeardownResult int

const (
	Unmounted TeardownResult = iota // no file was open: a plain unmount
	Aborted                         // files were open: detached and the FUSE connection aborted
	Detached                        // files were open: detached, but the connection could not be aborted
)

// Teardown takes down the FUSE mount at path whose device is dev (from
// Device, taken while it was mounted). With no file open it is unmounted.
// Otherwise it is detached (MNT_DETACH) and its FUSE connection aborted
// through fusectl, so that the open files fail with ENOTCONN instead of
// reaching a server that is going away; if the abort fails (Detached, with
// the error) those files keep the connection until they close.
func Teardown(path string, dev uint64) (TeardownResult, error) {
	if err := unix.Unmount(path, 0); err == nil {
		return Unmounted, nil
	}
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("mountpoint: detach %s: %w", path, err))
	}
	if dev == 0 { // never abort another mount's connection
		return Detached, errors.Join(append(errs, errors.New("mountpoint: device of the mount unknown"))...)
	}
	if err := AbortFUSE(dev); err != nil {
		return Detached, errors.Join(append(errs, err)...)
	}
	return Aborted, errors.Join(errs...)
}

const fusectl = "/sys/fs/fuse/connections"

// AbortFUSE aborts the FUSE connection of the mount whose device is dev by
// writing to its abort file in fusectl (mounting fusectl if needed). The
// connection id is the device's minor number.
func AbortFUSE(dev uint64) error {
	abort := filepath.Join(fusectl, fmt.Sprint(unix.Minor(dev)), "abort")
	if _, err := os.Stat(abort); err != nil {
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mountpoint: mount fusectl: %w", err)
		}
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		return fmt.Errorf("mountpoint: abort FUSE connection: %w", err)
	}
	return nil
}
