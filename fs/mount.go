package fs

import (
	"fmt"
	"io"
	"log"
	"os"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/shimmy-dev/shimmy/registry"
)

// MountOptions configure Mount.
type MountOptions struct {
	AllowOther bool // allow_other,default_permissions: other users, with kernel permission checks
	Debug      bool // log every FUSE request
	Log        logrus.FieldLogger
}

// Mount serves reg's tree at dir (type "fuse.shimmy", mountpoint.FSType)
// and returns once the kernel has the mount. It negotiates passthrough,
// records the outcome in reg (each channel's config shows it) and reports
// it; without passthrough a warning is logged and ring reads and writes go
// through the agent.
func Mount(dir string, reg *registry.Registry, o MountOptions) (*fuse.Server, bool, error) {
	root := NewRoot(reg, o.Log)
	lg := root.log
	zero := time.Duration(0)
	opts := &gofs.Options{
		// No kernel caching of entries or attributes: a chmod, a rmdir or a
		// re-typed channel must be visible at once, and lookups are cheap.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		NullPermissions: true,
		Logger:          log.New(debugWriter(lg), "", 0),
		MountOptions: fuse.MountOptions{
			FsName:            "shimmy",
			Name:              "shimmy",
			DirectMountStrict: true,
			AllowOther:        o.AllowOther,
			MaxWrite:          maxIO,
			DisableXAttrs:     true,
			Debug:             o.Debug,
			Logger:            log.New(debugWriter(lg), "fuse: ", 0),
		},
	}
	if o.AllowOther {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	server, err := gofs.Mount(dir, root, opts)
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

// maxIO is the largest read or write the kernel passes to the agent in one
// request (max_write; max_read follows it): larger ones come in pieces.
const maxIO = 1 << 20

// debugWriter is where go-fuse's own log lines go: lg at debug level.
func debugWriter(lg logrus.FieldLogger) io.Writer {
	if w, ok := lg.(interface {
		WriterLevel(logrus.Level) *io.PipeWriter
	}); ok {
		return w.WriterLevel(logrus.DebugLevel)
	}
	return io.Discard
}
