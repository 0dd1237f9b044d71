package verbs

import (
	"errors"
	"os"
	"testing"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
	"github.com/shimmy-dev/shimmy/rdma/rdmatest"
)

// DeviceEnv names the RDMA device the conformance suite runs on (empty:
// the first device found).
const DeviceEnv = "SHIMMY_RDMA_DEVICE"

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
	rdmatest.Run(t, func(o rdma.Options) (rdma.Transport, error) {
		return New(Options{Options: o, Device: os.Getenv(DeviceEnv)})
	})
}
