package registry

import (
	"fmt"
	"path/filepath"
	"sync"

	"github.com/shimmy-dev/shimmy/channel"
)

// Quota bounds what one namespace (one tenant) may take of the node. A
// zero field means no limit.
type Quota struct {
	Channels    int64 `json:"channels"`     // channels in the namespace
	Bytes       int64 `json:"bytes"`        // ring bytes: the sum of the channels' ring sizes (config size)
	MemberSlots int64 `json:"member_slots"` // the sum of the channels' member slots
}

// DefaultQuota is what a new namespace may take unless Options.Quota or
// SetQuota say otherwise: 1 024 channels, 1 GiB of rings and 65 536 member
// slots, so that one tenant cannot fill a node's /dev/shm (docs/limits.md).
var DefaultQuota = Quota{Channels: 1024, Bytes: 1 << 30, MemberSlots: 64 << 10}

// Usage is what a namespace's channels take, counted as Quota counts.
type Usage Quota

// cost is what one channel of configuration cfg counts against its quota.
func cost(cfg channel.Config) Usage {
	return Usage{Channels: 1, Bytes: cfg.Size(), MemberSlots: int64(cfg.MemberSlots)}
}

func (u Usage) add(d Usage, sign int64) Usage {
	return Usage{u.Channels + sign*d.Channels, u.Bytes + sign*d.Bytes, u.MemberSlots + sign*d.MemberSlots}
}

// quotaBook keeps a namespace's quota and usage. Its lock is a leaf: it
// is taken under the namespace's or a channel's lock and nothing else is
// taken under it.
type quotaBook struct {
	mu      sync.Mutex
	quota   Quota
	used    Usage
	lastErr string
}

// reserve counts d (added) minus free (released by the same change)
// against the quota, or refuses with ErrQuota and keeps the reason.
func (b *quotaBook) reserve(ns string, d, free Usage) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.used.add(d, 1).add(free, -1)
	for _, c := range []struct {
		what        string
		used, limit int64
		grows       bool
	}{
		{"channels", n.Channels, b.quota.Channels, d.Channels > free.Channels},
		{"ring bytes", n.Bytes, b.quota.Bytes, d.Bytes > free.Bytes},
		{"member slots", n.MemberSlots, b.quota.MemberSlots, d.MemberSlots > free.MemberSlots},
	} {
		if c.grows && c.limit > 0 && c.used > c.limit {
			err := fmt.Errorf("%w: namespace %s would have %d %s, its quota is %d", ErrQuota, ns, c.used, c.what, c.limit)
			b.lastErr = err.Error()
			return err
		}
	}
	b.used = n
	return nil
}

// move takes out off the usage and counts in instead, unchecked: a removed
// channel gives back what it held, a failed change undoes its reserve.
func (b *quotaBook) move(out, in Usage) {
	b.mu.Lock()
	b.used = b.used.add(out, -1).add(in, 1)
	b.mu.Unlock()
}

// Quota returns the namespace's quota.
func (ns *Namespace) Quota() Quota {
	ns.book.mu.Lock()
	defer ns.book.mu.Unlock()
	return ns.book.quota
}

// Usage returns what the namespace's channels take.
func (ns *Namespace) Usage() Usage {
	ns.book.mu.Lock()
	defer ns.book.mu.Unlock()
	return ns.book.used
}

// QuotaError returns the reason the last request was refused for the
// quota ("" if none was).
func (ns *Namespace) QuotaError() string {
	ns.book.mu.Lock()
	defer ns.book.mu.Unlock()
	return ns.book.lastErr
}

// SetQuota changes the namespace's quota and persists it. A quota below
// the current usage keeps what exists and refuses what would grow it.
// Front ends let only root call it (the mount's .quota file).
func (ns *Namespace) SetQuota(q Quota) error {
	if q.Channels < 0 || q.Bytes < 0 || q.MemberSlots < 0 {
		return fmt.Errorf("%w: negative quota %+v", ErrInvalidConfig, q)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed {
		return fmt.Errorf("%w: namespace %q", ErrNotFound, ns.Name)
	}
	m := ns.meta
	m.Quota = &q
	if err := writeMeta(filepath.Join(ns.reg.dir, ns.Name), m); err != nil {
		return err
	}
	ns.meta = m
	ns.book.mu.Lock()
	ns.book.quota, ns.book.lastErr = q, ""
	ns.book.mu.Unlock()
	ns.reg.log.WithField("ns", ns.Name).WithField("quota", fmt.Sprintf("%+v", q)).Info("namespace quota set")
	return nil
}
