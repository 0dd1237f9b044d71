package verbs

import (
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/rdmatest"
)

// The environment of the conformance suite on a host with a device:
// the device name (empty: the first found) and the GID index (RoCE).
const (
	DeviceEnv   = "SHIMMY_RDMA_DEVICE"
	GIDIndexEnv = "SHIMMY_RDMA_GID_INDEX"
)

// A device that does not exist (or none at all, or a build without the
// tag) is reported as rdma.ErrNoDevice, never a crash.
func TestNoDevice(t *testing.T) {
	ca, err := certs.NewCA(certs.Options{Name: "ca"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{Options: rdma.Options{CA: ca.Pool()}, Device: "shimmy-no-such-device"})
	if !errors.Is(err, rdma.ErrNoDevice) {
		t.Fatalf("New on a missing device: %v, want ErrNoDevice", err)
	}
	t.Logf("reported: %v", err)
}

func TestConformance(t *testing.T) {
	gid := 0
	if v := os.Getenv(GIDIndexEnv); v != "" {
		var err error
		if gid, err = strconv.Atoi(v); err != nil {
			t.Fatalf("%s=%q: %v", GIDIndexEnv, v, err)
		}
	}
	rdmatest.Run(t, func(o rdma.Options) (rdma.Transport, error) {
		return New(Options{Options: o, Device: os.Getenv(DeviceEnv), GIDIndex: gid})
	})
}
