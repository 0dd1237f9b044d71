//go:build amd64

package shmword

// StoreRelease stores v at p with (at least) release semantics. On amd64
// every store is a release store (TSO), and a plain MOV lets the store
// buffer absorb a store to a line another core is polling, where the XCHG
// that atomic.StoreUint64 compiles to is a full barrier that waits for the
// line. The Go compiler keeps stores in program order.
func StoreRelease(p *uint64, v uint64) { *p = v }
