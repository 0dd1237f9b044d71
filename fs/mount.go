package fs

import (
	"fmt"
	"log"
	"os"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

// FSType is the filesystem type the mount shows in /proc/self/mountinfo
// ("fuse.shimmy"), by which stale mounts of ours are recognised.
const FSType = "fuse.shimmy"

// MountOptions configure Mount.
type MountOptions struct {
	AllowOther bool // allow_other,default_permissions: other users, with kernel permission checks
	Debug      bool // log every FUSE request
	Log        *logrus.Logger
}

// Mount serves reg's tree at dir and returns once the kernel has the mount.
// It reports whether ring files are served by FUSE passthrough; if not,
// a warning is logged and ring reads and writes go through the agent.
func Mount(dir string, reg *Registry, o MountOptions) (*fuse.Server, bool, error) {
	lg := o.Log
	if lg == nil {
		lg = logrus.StandardLogger()
	}
	zero := time.Duration(0)
	opts := &gofs.Options{
		// No kernel caching of entries or attributes: a chmod, a rmdir or a
		// re-typed channel must be visible at once, and lookups are cheap.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		NullPermissions: true,
		Logger:          log.New(lg.WriterLevel(logrus.DebugLevel), "", 0),
		MountOptions: fuse.MountOptions{
			FsName:            "shimmy",
			Name:              "shimmy",
			DirectMountStrict: true,
			AllowOther:        o.AllowOther,
			MaxWrite:          1 << 20,
			DisableXAttrs:     true,
			Debug:             o.Debug,
			Logger:            log.New(lg.WriterLevel(logrus.DebugLevel), "fuse: ", 0),
		},
	}
	if o.AllowOther {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	server, err := gofs.Mount(dir, NewRoot(reg), opts)
	if err != nil {
		return nil, false, fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	pt := server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0 && os.Geteuid() == 0
	reg.SetPassthrough(pt)
	if !pt {
		lg.WithField("op", "mount").Warn("FUSE passthrough unavailable (needs Linux 6.9+ and CAP_SYS_ADMIN): ring files are served through the agent and mmap of them is not shared memory; map the backing file named in each channel's config instead")
	}
	return server, pt, nil
}
