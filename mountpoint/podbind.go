package mountpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// PodBinds keeps the pod directory: for each namespace, a bind mount of
// <Source>/<ns> (a directory of the agent's FUSE mount) at <Dir>/<ns>,
// the path a pod's hostPath volume names.
//
// Why: a pod's volume is a copy of whatever mount its host path resolved
// to when the pod started. A volume of <Source>/<ns> is a copy of the
// agent's FUSE mount itself, and a new agent's mount at Source reaches
// only Source's peers, not that copy: the pod keeps a dead mount. A
// volume of <Dir>/<ns> is instead a slave of the bind's peer group
// (HostToContainer is rslave), and that group outlives the agent: a new
// agent mounts its bind on top of the old one, at the root of a mount of
// the group, so the kernel stacks it in every pod too. Then it takes the
// dead layers from under it (pruner), so that <Dir>/<ns> holds one mount
// again; a pod's volume keeps its own root (a copy of the layer it
// started under, which no unmount elsewhere can reach) and the copies
// stacked on it. Remove takes every layer down.
type PodBinds struct {
	Dir    string // the pod directory, e.g. /run/shimmy-pods
	Source string // the agent's mount point
	Dev    uint64 // device of the agent's current mount at Source (Device)
}

// Prepare makes Dir a shared mount point (MakeShared), so that binds
// made in it reach the host's and the pods' mount namespaces.
func (p PodBinds) Prepare() error { return MakeShared(p.Dir) }

// Bind makes sure that the top mount at <Dir>/<ns> is a bind of
// <Source>/<ns> from the current mount (Dev): on a new directory, or on
// top of the layers earlier agents left, which it then takes down from
// under it. It returns how many layers are there afterwards: 1, or more
// with an error wrapping ErrLayersKept if the dead ones stay (the new bind
// serves all the same). A namespace bound already is left alone.
func (p PodBinds) Bind(ns string) (layers int, err error) {
	path := filepath.Join(p.Dir, ns)
	ls, err := p.layers(path)
	if err != nil {
		return 0, err
	}
	if n := len(ls); n > 0 && ls[n-1].Dev == p.Dev {
		return n, nil
	}
	if len(ls) == 0 { // never stat a path whose top layer may be dead
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return 0, fmt.Errorf("mountpoint: pod directory of %s: %w", ns, err)
		}
	}
	var pr *pruner
	var pruneErr error
	if len(ls) > 0 {
		pr, pruneErr = startPruner(path)
	}
	if err := bindPrivate(filepath.Join(p.Source, ns), path); err != nil {
		if pr != nil {
			pr.cancel()
		}
		return len(ls), fmt.Errorf("mountpoint: bind namespace %s at %s: %w", ns, path, err)
	}
	if pr != nil {
		pruneErr = pr.run()
	}
	if ls, err = p.layers(path); err != nil {
		return 0, err
	}
	if n := len(ls); n == 0 || ls[n-1].Dev != p.Dev {
		return n, fmt.Errorf("mountpoint: bind namespace %s at %s: the new bind is not on top (%d layers, pruning: %v)", ns, path, n, pruneErr)
	}
	if len(ls) > 1 {
		if pruneErr == nil { // kernels before 4.11 skip a propagated unmount of a covered mount
			pruneErr = errors.New("the kernel left them")
		}
		return len(ls), fmt.Errorf("%w at %s (%d): %w", ErrLayersKept, path, len(ls)-1, pruneErr)
	}
	return len(ls), nil
}

// Remove takes down every layer at <Dir>/<ns> and removes the directory
// (the namespace is gone).
func (p PodBinds) Remove(ns string) error {
	path := filepath.Join(p.Dir, ns)
	for {
		ls, err := p.layers(path)
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			break
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("mountpoint: unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mountpoint: remove %s: %w", path, err)
	}
	return nil
}

// Namespaces lists the directories of Dir (bound or not).
func (p PodBinds) Namespaces() ([]string, error) {
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		return nil, fmt.Errorf("mountpoint: read pod directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// layers returns the agents' mounts at path, bottom first.
func (p PodBinds) layers(path string) ([]Mount, error) { return Layers(path) }

// Layers returns the agents' mounts (FSType) at path in this mount
// namespace, bottom first: the pod directory's namespaces hold one each.
func Layers(path string) ([]Mount, error) {
	ms, err := Mounts()
	if err != nil {
		return nil, err
	}
	return layersAt(ms, path), nil
}

// bindPrivate bind mounts src at dst as a mount of its own peer group:
// a clone of src (open_tree), made private so that it leaves src's group
// (the agent's mount is shared in a DaemonSet), then attached at dst,
// where the kernel gives it and its copies in dst's peers a new group.
// Kernels without open_tree (before 5.2) get a plain bind.
func bindPrivate(src, dst string) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return unix.Mount(src, dst, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(fd)
	err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Propagation: unix.MS_PRIVATE})
	if err != nil && !errors.Is(err, unix.ENOSYS) { // before 5.12: the clone stays in src's group
		return fmt.Errorf("mount_setattr: %w", err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}
