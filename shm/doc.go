// Package shm owns the shared memory behind Shimmy's channels: it creates,
// opens, sizes, maps, unmaps and removes the segments that ring buffers live
// in.
//
// Two flavours are supported because clients attach in two ways:
//
//   - POSIX objects are plain files on a tmpfs (normally /dev/shm) or
//     hugetlbfs mount. They are addressed by path, so a FUSE layer can hand
//     the open file straight through to clients (see [Segment.File]).
//   - SysV segments (shmget/shmat) are addressed by a numeric id, for clients
//     that only know how to attach by id.
//
// Every Segment is mapped MAP_SHARED and read-write, so all mappings of the
// same object, in this process or any other, see each other's writes.
// Closing a Segment only unmaps it; the memory lives until [Segment.Remove]
// is called (and, for SysV, the last process detaches).
//
// Failures are reported with the sentinel errors below, wrapped with the
// path or id and the sizes involved, so callers can branch with errors.Is
// and still log something useful. In particular the package refuses to
// silently resize a segment somebody else created ([ErrTooSmall]) and to map
// a file that is not actually memory-backed ([ErrNotShared]), since either
// would corrupt or mislead the other party.
package shm
