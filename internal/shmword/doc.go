// Package shmword holds the memory-ordering primitives that the ring
// client and the benchmark harness both need for words in shared memory
// that one party writes and others poll: a release store without a full
// barrier, and a sequentially consistent store for the one store that a
// check of a waiter count follows. Only for memory mapped from a file or
// shm object, which the race detector does not track; Go-heap words use
// sync/atomic.
package shmword

import "sync/atomic"

// StoreSeqCst stores v at p and orders the store before every later load
// (XCHG on amd64, a full barrier; a swap rather than atomic.StoreUint64,
// which the race detector's runtime turns into a release store): the progress store that precedes a
// check of a waiter count. With a release store alone, x86's store buffer
// lets the load of the waiter count pass the store, the waiter misses the
// progress and the waker misses the waiter (the store-buffering pattern):
// a lost wake-up.
func StoreSeqCst(p *uint64, v uint64) { atomic.SwapUint64(p, v) }
