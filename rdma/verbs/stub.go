//go:build !verbs || !cgo

package verbs

import (
	"fmt"

	"github.com/shimmy-dev/shimmy/rdma"
)

// New reports that this binary was built without the verbs backend.
func New(Options) (rdma.Transport, error) {
	return nil, fmt.Errorf("%w: built without the verbs tag (go build -tags verbs)", rdma.ErrNoDevice)
}
