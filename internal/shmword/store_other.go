//go:build !amd64

package shmword

import "sync/atomic"

// StoreRelease stores v at p with release semantics: see store_amd64.go.
func StoreRelease(p *uint64, v uint64) { atomic.StoreUint64(p, v) }
