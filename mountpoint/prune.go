package mountpoint

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrLayersKept says that the dead layers under a new bind could not be
// taken down: they stay, covered, as they did before pruning existed.
var ErrLayersKept = errors.New("mountpoint: dead layers kept under the new bind")

// pruner takes down the dead layers under a new bind at path without
// touching the bind itself, through a mount namespace of its own.
//
// Why a namespace: a covered mount cannot be unmounted alone (umount of it
// takes the mounts on top with it), but an unmount that reaches a mount by
// propagation, from a peer, takes only that mount and moves the one on
// its root down in its place, in one step (the kernel's "topper", Linux
// 4.11+). So the pruner's thread unshares its mount namespace before the
// new bind is made: its copies of the layers are peers of the real ones.
// Its copy of the top layer leaves the peer group, so that the new bind
// does not reach it; the thread then unmounts its copies top down, and
// each unmount takes the real layer (and its copies in pods' volumes
// that are not a volume's root) from under the new bind. The path never
// resolves to anything but the new bind, so no one sees a gap.
//
// MOVE_MOUNT_BENEATH (Linux 6.5+) does not do this job: it puts the new
// mount on the dead top's parent, which a pod whose volume is a copy of
// that dead top does not have, so such a pod would keep the dead mount.
type pruner struct {
	start chan bool // true: the new bind is in place, prune; false: give up
	done  chan error
}

// startPruner unshares the pruner's namespace and detaches its copy of the
// top layer at path from the peer group; call it before the new bind.
func startPruner(path string) (*pruner, error) {
	pr := &pruner{start: make(chan bool, 1), done: make(chan error, 1)}
	ready := make(chan error, 1)
	go throwawayThread(func() {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			ready <- fmt.Errorf("unshare a mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", path, "", unix.MS_PRIVATE, ""); err != nil {
			ready <- fmt.Errorf("make the top layer's copy private: %w", err)
			return
		}
		ready <- nil
		if <-pr.start {
			pr.done <- unmountCopies(path)
		}
	})
	if err := <-ready; err != nil {
		return nil, err
	}
	return pr, nil
}

// throwawayThread runs f locked to an OS thread that ends with it, for f
// leaves its thread in a state no other goroutine may run in (a mount
// namespace of its own). Never the main thread: the runtime cannot end
// that one, and /proc/self reads through it.
func throwawayThread(f func()) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	if unix.Gettid() != unix.Getpid() {
		f()
		return
	}
	done := make(chan struct{})
	go func() { // on another thread: this one is held here
		defer close(done)
		throwawayThread(f)
	}()
	<-done
	runtime.UnlockOSThread()
}

// run prunes (the new bind is in place) and waits; cancel gives up.
func (pr *pruner) run() error {
	pr.start <- true
	return <-pr.done
}

func (pr *pruner) cancel() { pr.start <- false }

// unmountCopies unmounts, in the calling thread's namespace, every layer
// at path, top down.
func unmountCopies(path string) error {
	ms, err := mountsOf("/proc/thread-self/mountinfo")
	if err != nil {
		return err
	}
	for range layersAt(ms, path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount a dead layer's copy: %w", err)
		}
	}
	return nil
}

// mountsOf reads a mountinfo file.
func mountsOf(file string) ([]Mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// layersAt returns the agents' mounts at path, bottom first.
func layersAt(ms []Mount, path string) []Mount {
	var out []Mount
	for _, m := range ms { // mountinfo lists a mount after the one it covers
		if m.Point == path && m.FSType == FSType {
			out = append(out, m)
		}
	}
	return out
}
