package registry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shimmy-dev/shimmy/channel"
)

const (
	metaFile = "meta.json"
	ringFile = "ring"
)

// Attr is the owner and permission bits of a namespace or channel (what a
// front end shows as a directory's uid, gid and mode).
type Attr struct {
	UID  uint32
	GID  uint32
	Mode uint32 // permission bits (07777)
}

// meta is what the state directory keeps beside a namespace or channel
// (meta.json): its Attr and, for channels, the configuration it was
// created with (the ring header stays authoritative).
type meta struct {
	UID    uint32      `json:"uid"`
	GID    uint32      `json:"gid"`
	Mode   uint32      `json:"mode"`
	Config *configMeta `json:"config,omitempty"`
	SysV   *sysvMeta   `json:"sysv,omitempty"`  // a SysV ring (none: POSIX)
	Quota  *Quota      `json:"quota,omitempty"` // namespaces: set by SetQuota or at creation
	Owner  string      `json:"owner,omitempty"` // channels: CreateOptions.Owner
}

func (m meta) attr() Attr { return Attr{UID: m.UID, GID: m.GID, Mode: m.Mode & 0o7777} }

func (m *meta) setAttr(a Attr) { m.UID, m.GID, m.Mode = a.UID, a.GID, a.Mode&0o7777 }

// configMeta is channel.Config as stored in meta.json.
type configMeta struct {
	Type        channel.Type   `json:"type"`
	Policy      channel.Policy `json:"policy"`
	Capacity    uint64         `json:"capacity"`
	MaxMessage  uint32         `json:"max_message"`
	MemberSlots uint32         `json:"member_slots"`
	Lease       string         `json:"lease"`
	Epoch       uint64         `json:"epoch"`
}

func newConfigMeta(c channel.Config) *configMeta {
	return &configMeta{
		Type: c.Type, Policy: c.Policy, Capacity: c.Capacity,
		MaxMessage: c.MaxMessage, MemberSlots: c.MemberSlots, Lease: c.Lease.String(), Epoch: c.Epoch,
	}
}

func readMeta(dir string) (meta, error) {
	var m meta
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, metaFile), err)
	}
	m.Mode &= 0o7777
	return m, nil
}

// writeMeta replaces meta.json atomically (write and rename).
func writeMeta(dir string, m meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("registry: write metadata: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("registry: write metadata: %w", err)
	}
	return nil
}
