package channel

import "github.com/shimmy-dev/shimmy/internal/shmword"

// storeRelease stores v at p with release semantics and no full barrier
// (see package shmword): the ring's progress words.
func storeRelease(p *uint64, v uint64) { shmword.StoreRelease(p, v) }
