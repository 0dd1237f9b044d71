package channel

import "github.com/shimmy-dev/shimmy/internal/shmword"

// storeRelease stores v at p with release semantics and no full barrier
// (see package shmword): the ring's progress words.
func storeRelease(p *uint64, v uint64) { shmword.StoreRelease(p, v) }

// storeSeqCst stores v at p and orders it before later loads: the progress
// store that a look at a waiter count follows (section 11 of the ABI).
func storeSeqCst(p *uint64, v uint64) { shmword.StoreSeqCst(p, v) }
