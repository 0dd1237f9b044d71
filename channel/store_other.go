//go:build !amd64

package channel

import "sync/atomic"

// storeRelease stores v at p with release semantics: see store_amd64.go.
func storeRelease(p *uint64, v uint64) { atomic.StoreUint64(p, v) }
