// Package verbs is the rdma backend for RDMA NICs, in cgo over rdma-core's
// libibverbs: one RC queue pair per link, regions registered with
// ibv_reg_mr, one-sided RDMA_WRITE, and RDMA_WRITE_WITH_IMM as the doorbell
// (the receiver's immediate completion). Each link rides on a link of the
// tcp backend (mutual TLS 1.3), which carries the queue pair setup, the
// control messages and the heartbeats: region keys travel only inside it.
//
// The backend is built with `-tags verbs` (and cgo; Debian's
// libibverbs-dev). Without the tag, New reports rdma.ErrNoDevice. On a
// machine without an RDMA device (ibv_get_device_list finds none, or fails
// with ENOSYS as on kernels without InfiniBand support) New reports
// rdma.ErrNoDevice wrapping the cause. The conformance suite runs
// unchanged on a host with a device: see docs/remote.md.
//
// Registered memory must lie outside the Go heap (a mapped ring, or
// unix.Mmap): the NIC keeps using it after ibv_reg_mr returns.
package verbs

import "github.com/shimmy-dev/shimmy/rdma"

// Options configure the verbs backend.
type Options struct {
	rdma.Options
	// Device is the RDMA device name (ibv_devices); empty: the first one.
	Device string
	// Port is the device port; default 1.
	Port uint8
	// GIDIndex selects the source GID (RoCE needs a valid one; see
	// show_gids). Default 0.
	GIDIndex int
	// SendDepth bounds the writes in flight on a link; default 1024.
	SendDepth int
}

func (o Options) withDefaults() Options {
	o.Options = o.Options.WithDefaults()
	if o.Port == 0 {
		o.Port = 1
	}
	if o.SendDepth <= 0 {
		o.SendDepth = 1024
	}
	return o
}
