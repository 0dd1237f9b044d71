package chanfile

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// ConfigFile is what a channel's config file says.
type ConfigFile struct {
	Config      channel.Config // zero when Broken
	Attr        registry.Attr
	Size        int64  // bytes of the ring file
	Backing     string // the POSIX shm file, or "sysv" (then SysVKey, SysVID)
	SysVKey     int
	SysVID      int
	Passthrough bool
	Broken      bool
}

// Sysv is ConfigFile.Backing of a SysV channel.
const Sysv = string(registry.BackingSysV)

// NewConfigFile describes a channel as its config file does.
func NewConfigFile(ch *registry.Channel, passthrough bool) ConfigFile {
	c := ch.Config()
	f := ConfigFile{Config: c, Attr: ch.Attr(), Size: c.Size(), Passthrough: passthrough, Broken: c.Capacity == 0 || ch.Broken()}
	switch b := ch.Backing(); b.Kind {
	case registry.BackingSysV:
		f.Backing, f.SysVKey, f.SysVID = Sysv, b.SysVKey, b.SysVID
	default:
		f.Backing = b.Path
	}
	if f.Broken {
		f.Config, f.Size, f.Passthrough = channel.Config{}, 0, false
	}
	return f
}

func (c ConfigFile) backing() string {
	if c.Backing != Sysv {
		return fmt.Sprintf("backing %s\n", c.Backing)
	}
	return fmt.Sprintf("backing %s\nsysv_key 0x%08x\nsysv_id %d\n", c.Backing, uint32(c.SysVKey), c.SysVID)
}

// Format renders the config file. A broken channel shows only mode, uid,
// gid, backing and "broken 1".
func (c ConfigFile) Format() []byte {
	var b strings.Builder
	a := c.Attr
	if c.Broken {
		fmt.Fprintf(&b, "mode %04o\nuid %d\ngid %d\n%sbroken 1\n", a.Mode, a.UID, a.GID, c.backing())
		return []byte(b.String())
	}
	g := c.Config
	fmt.Fprintf(&b, "type %s\npolicy %s\ncapacity %d\nmax_message %d\nmember_slots %d\nlease %s\n",
		g.Type, g.Policy, g.Capacity, g.MaxMessage, g.MemberSlots, g.Lease)
	fmt.Fprintf(&b, "mode %04o\nuid %d\ngid %d\nepoch %d\nsize %d\n%spassthrough %d\n",
		a.Mode, a.UID, a.GID, g.Epoch, c.Size, c.backing(), b2i(c.Passthrough))
	return []byte(b.String())
}

// ParseConfig reads a config file; unknown keys are ignored.
func ParseConfig(b []byte) (ConfigFile, error) {
	var c ConfigFile
	var errs fieldErrs
	for _, kv := range Parse(b) {
		v := kv.Value
		switch kv.Key {
		case "type":
			errs.last = c.Config.Type.UnmarshalText([]byte(v))
		case "policy":
			errs.last = c.Config.Policy.UnmarshalText([]byte(v))
		case "capacity":
			c.Config.Capacity = errs.uint(kv, 64)
		case "max_message":
			c.Config.MaxMessage = uint32(errs.uint(kv, 32))
		case "member_slots":
			c.Config.MemberSlots = uint32(errs.uint(kv, 32))
		case "lease":
			c.Config.Lease, errs.last = time.ParseDuration(v)
		case "epoch":
			c.Config.Epoch = errs.uint(kv, 64)
		case "mode":
			var m uint64
			m, errs.last = strconv.ParseUint(v, 8, 32)
			c.Attr.Mode = uint32(m)
		case "uid":
			c.Attr.UID = uint32(errs.uint(kv, 32))
		case "gid":
			c.Attr.GID = uint32(errs.uint(kv, 32))
		case "size":
			c.Size = int64(errs.uint(kv, 63))
		case "backing":
			c.Backing = v
		case "sysv_key":
			var k int64
			k, errs.last = strconv.ParseInt(v, 0, 64)
			c.SysVKey = int(int32(k))
		case "sysv_id":
			c.SysVID = int(errs.uint(kv, 31))
		case "passthrough":
			c.Passthrough = errs.uint(kv, 1) == 1
		case "broken":
			c.Broken = errs.uint(kv, 1) == 1
		}
		if errs.last != nil {
			return c, fmt.Errorf("config %s %q: %w", kv.Key, v, errs.last)
		}
	}
	return c, nil
}

// FormatStats renders the stats file.
func FormatStats(s registry.Stats) []byte {
	return []byte(fmt.Sprintf("messages %d\nbytes %d\npublishers %d\nsubscribers %d\nlag_max %d\nlost %d\nreaped %d\nepoch %d\nbroken %d\n",
		s.Messages, s.Bytes, s.Publishers, s.Subscribers, s.LagMax, s.Lost, s.Reaped, s.Epoch, b2i(s.Broken)))
}

// ParseStats reads a stats file; unknown keys are ignored. NS and Name
// stay empty (the file is inside the channel's directory).
func ParseStats(b []byte) (registry.Stats, error) {
	var s registry.Stats
	var errs fieldErrs
	fields := map[string]*uint64{
		"messages": &s.Messages, "bytes": &s.Bytes, "publishers": &s.Publishers, "subscribers": &s.Subscribers,
		"lag_max": &s.LagMax, "lost": &s.Lost, "reaped": &s.Reaped, "epoch": &s.Epoch,
	}
	for _, kv := range Parse(b) {
		dst := fields[kv.Key]
		switch {
		case dst != nil:
			*dst = errs.uint(kv, 64)
		case kv.Key == "broken":
			s.Broken = errs.uint(kv, 1) == 1
		}
		if errs.last != nil {
			return s, fmt.Errorf("stats %s %q: %w", kv.Key, kv.Value, errs.last)
		}
	}
	return s, nil
}

// FormatError renders the error file: the reason the last change was
// refused and, for a broken channel, why it broke.
func FormatError(lastErr, brokenReason string) []byte {
	var b strings.Builder
	if lastErr != "" {
		b.WriteString(lastErr)
		b.WriteByte('\n')
	}
	if brokenReason != "" {
		fmt.Fprintf(&b, "broken: %s\n", brokenReason)
	}
	return []byte(b.String())
}

// fieldErrs keeps the error of the field being parsed.
type fieldErrs struct{ last error }

func (e *fieldErrs) uint(kv Pair, bits int) uint64 {
	var v uint64
	v, e.last = strconv.ParseUint(kv.Value, 10, bits)
	return v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
