package chanfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

func ptr[T any](v T) *T { return &v }

func TestParseCtl(t *testing.T) {
	for _, tc := range []struct {
		text string
		want registry.Change
		bad  bool
	}{
		{text: "", want: registry.Change{}},
		{text: "# comment\n\n", want: registry.Change{}},
		{text: "type stream\ncapacity 64K\nlease 500ms\nmember_slots 8\n", want: registry.Change{
			Type: ptr(channel.TypeStream), Capacity: ptr(uint64(64 << 10)), Lease: ptr(500 * time.Millisecond), MemberSlots: ptr(uint32(8))}},
		{text: "policy overwrite\nmax_message 1KiB", want: registry.Change{Policy: ptr(channel.PolicyOverwrite), MaxMessage: ptr(uint32(1024))}},
		{text: "capacity 4M\ncapacity 1g\n", want: registry.Change{Capacity: ptr(uint64(1 << 30))}},
		{text: "  type   pubsub  ", want: registry.Change{Type: ptr(channel.TypePubSub)}},
		{text: "nonsense 1\n", bad: true},
		{text: "type queue\n", bad: true},
		{text: "policy drop\n", bad: true},
		{text: "capacity\n", bad: true},
		{text: "capacity 1 2\n", bad: true},
		{text: "capacity 12Q\n", bad: true},
		{text: "max_message 0\n", bad: true},
		{text: "member_slots many\n", bad: true},
		{text: "lease 1\n", bad: true},
		{text: "backing sysv\n", want: registry.Change{Backing: ptr(registry.BackingSysV)}},
		{text: "backing tape\n", bad: true},
	} {
		got, err := ParseCtl(tc.text)
		if tc.bad {
			if !errors.Is(err, registry.ErrInvalidConfig) {
				t.Errorf("ParseCtl(%q) = %v, want ErrInvalidConfig", tc.text, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCtl(%q) = %+v, %v", tc.text, got, err)
			continue
		}
		// What FormatCtl writes parses back to the same change.
		if back, err := ParseCtl(string(FormatCtl(got))); err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("FormatCtl(%q) = %q parses to %+v, %v", tc.text, FormatCtl(got), back, err)
		}
	}
}

func TestConfigFile(t *testing.T) {
	c := ConfigFile{
		Config: channel.Config{Type: channel.TypeStream, Policy: channel.PolicyBlock, Capacity: 1 << 20, MaxMessage: 65536,
			MemberSlots: 64, Lease: 2 * time.Second, Epoch: 1718000000000000000},
		Attr: registry.Attr{UID: 1, GID: 2, Mode: 0o750}, Size: 1118208, Backing: "/dev/shm/shimmy/ns/ch/ring", Passthrough: true,
	}
	want := "type stream\npolicy block\ncapacity 1048576\nmax_message 65536\nmember_slots 64\nlease 2s\n" +
		"mode 0750\nuid 1\ngid 2\nepoch 1718000000000000000\nsize 1118208\nbacking /dev/shm/shimmy/ns/ch/ring\npassthrough 1\n"
	if got := string(c.Format()); got != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
	broken := ConfigFile{Attr: c.Attr, Backing: c.Backing, Broken: true}
	if got := string(broken.Format()); got != "mode 0750\nuid 1\ngid 2\nbacking /dev/shm/shimmy/ns/ch/ring\nbroken 1\n" {
		t.Errorf("broken Format:\n%s", got)
	}
	sysv := c
	sysv.Backing, sysv.SysVKey, sysv.SysVID = Sysv, 0x5301abcd, 42
	if got := string(sysv.Format()); !strings.Contains(got, "\nbacking sysv\nsysv_key 0x5301abcd\nsysv_id 42\npassthrough 1\n") {
		t.Errorf("sysv Format:\n%s", got)
	}
	for _, in := range []ConfigFile{c, broken, sysv} {
		if back, err := ParseConfig(in.Format()); err != nil || back != in {
			t.Errorf("ParseConfig(Format(%+v)) = %+v, %v", in, back, err)
		}
	}
	for _, bad := range []string{"capacity x\n", "mode 9\n", "type queue\n", "lease 1\n"} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("ParseConfig(%q) accepted", bad)
		}
	}
}

func TestStatsFile(t *testing.T) {
	s := registry.Stats{Messages: 6, Bytes: 192, Publishers: 1, Subscribers: 2, LagMax: 3, Lost: 4, Reaped: 5, Epoch: 9, Broken: true}
	want := "messages 6\nbytes 192\npublishers 1\nsubscribers 2\nlag_max 3\nlost 4\nreaped 5\nepoch 9\nbroken 1\n"
	if got := string(FormatStats(s)); got != want {
		t.Errorf("FormatStats:\n%s", got)
	}
	if back, err := ParseStats([]byte(want)); err != nil || back != s {
		t.Errorf("ParseStats = %+v, %v", back, err)
	}
	if _, err := ParseStats([]byte("messages -1\n")); err == nil {
		t.Error("ParseStats accepted a negative count")
	}
}

func TestPairs(t *testing.T) {
	p := Parse([]byte("a 1\n\n  b  two words \na 3\nflag\n"))
	want := Pairs{{"a", "1"}, {"b", "two words"}, {"a", "3"}, {"flag", ""}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Parse = %q", p)
	}
	if v, ok := p.Get("a"); !ok || v != "3" {
		t.Errorf("Get(a) = %q, %v", v, ok)
	}
	if _, ok := p.Get("zz"); ok {
		t.Error("Get of a missing key found it")
	}
	if m := p.Map(); m["a"] != "3" || m["b"] != "two words" || len(m) != 3 {
		t.Errorf("Map = %v", m)
	}
	if got := string(FormatError("bad line", "")) + string(FormatError("", "header")); got != "bad line\nbroken: header\n" {
		t.Errorf("FormatError: %q", got)
	}
	if StreamFile(0, Pub) != "up.pub" || StreamFile(1, MsgOldest) != "down.msg.oldest" {
		t.Error("StreamFile")
	}
}
