package tcp

import (
	"testing"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/rdmatest"
)

func TestConformance(t *testing.T) {
	rdmatest.Run(t, func(o rdma.Options) (rdma.Transport, error) { return New(o) })
}
