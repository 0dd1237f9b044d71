//go:build amd64

package shmword

// StoreRelease stores v at p with (at least) release semantics. On amd64
// every store is a release store (TSO), and a plain MOV lets the store
// buffer absorb a store to a line another core is polling, where the XCHG
// that atomic.StoreUint64 compiles to is a full barrier that waits for the
// line. It is written in assembly so that the Go compiler, which may move
// or drop plain stores to memory it thinks no one else reads, keeps it in
// program order with every other memory access.
//
// A release store does not order itself before a later load: use
// StoreSeqCst where a load of a waiter count follows.
//
//go:noescape
func StoreRelease(p *uint64, v uint64)
