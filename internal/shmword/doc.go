// Package shmword holds the one memory-ordering primitive that the ring
// client and the benchmark harness both need for words in shared memory
// that one party writes and others poll: a release store without a full
// barrier. Only for memory mapped from a file or shm object, which the
// race detector does not track; Go-heap words use sync/atomic.
package shmword
