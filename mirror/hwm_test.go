package mirror

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/internal/testenv"
)

// fileRing formats a ring in a file of its own, mapped until cleanup.
func fileRing(t *testing.T, cfg channel.Config) *channel.Ring {
	t.Helper()
	cfg = cfg.WithDefaults()
	path := filepath.Join(testenv.ShmDir(t, "mirror-ring-"), "ring")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, cfg.Size()); err != nil {
		t.Fatal(err)
	}
	r, err := channel.Format(testenv.MapFile(t, path), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestHWMReconcile: a restarted importer counts the part a previous run
// had in flight as in exactly when the ring shows it committed (or shows
// nothing any more), whichever point the previous run died at.
func TestHWMReconcile(t *testing.T) {
	ctx := context.Background()
	msg := make([]byte, 100)
	const have, pend = 12, 20
	for _, tc := range []struct {
		name string
		// died brings the claim to where the previous run left it, and
		// may change the record it stored.
		died     func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec)
		wantHave uint64
		closes   bool // died closed the publisher
	}{
		{"after the commit", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
		}, pend, false},
		{"before the commit", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
		}, have, false},
		{"before the commit, claim reaped", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
			p.Close() // pads the claim as a reaper does
		}, have, true},
		{"after the commit, ring lapped since", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
			other, err := r.NewPublisher(channel.PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			for range 2 * int(r.Config().Capacity) / len(msg) {
				if err := other.Publish(ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
		}, pend, false},
		{"after the commit, ring re-created since", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
			rec.Ring++
		}, have, false},
		{"after the part was stored as had", func(t *testing.T, r *channel.Ring, p *channel.Publisher, b channel.Batch, rec *hwmRec) {
			if err := p.CommitBatch(b); err != nil {
				t.Fatal(err)
			}
			rec.Have = pend
		}, pend, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fileRing(t, channel.Config{Capacity: 4096})
			p, err := r.NewPublisher(channel.PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(ctx, msg); err != nil {
				t.Fatal(err)
			}
			b, err := p.ClaimBatch(ctx, []int{len(msg), len(msg)})
			if err != nil {
				t.Fatal(err)
			}
			rec := hwmRec{markRec: markRec{Epoch: 7, Seq: 10, Units: 160}, Tail: pend + 100, Have: have,
				Pend: pend, At: b.Position(), Ring: r.Epoch(), Slot: p.Slot()}
			tc.died(t, r, p, b, &rec)
			if !tc.closes {
				defer p.Close()
			}
			got := rec.reconcile(r, 0)
			if got.Have != tc.wantHave || got.Pend != 0 || got.markRec != rec.markRec {
				t.Fatalf("reconciled %+v into %+v, want Have %d and nothing in flight", rec, got, tc.wantHave)
			}
		})
	}
}

// TestHWMFile: a mark reads back as stored; a mark an agent stored before
// hwmRec (its 32 bytes alone), or whose part after them is damaged, reads
// as having nothing beyond its position; one an agent stored before the
// spool reads with what it had beyond its position and its claim in
// flight (sequences); a damaged position reads as no mark.
func TestHWMFile(t *testing.T) {
	full := hwmRec{markRec: markRec{Epoch: 7, Seq: 10, Units: 160}, Next: 11, Tail: 900, Have: 300, Pend: 400, PendNext: 13,
		At: channel.MakePosition(3, 4099), Ring: 99, Slot: 5}
	plain := hwmRec{markRec: full.markRec}
	v1 := hwmRec{markRec: full.markRec, Next: 12, PendNext: 20, At: full.At, Ring: full.Ring, Slot: full.Slot}
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, mk *mark)
		flip  int // a byte to damage after writing; -1: none
		want  hwmRec
	}{
		{"stored", func(t *testing.T, mk *mark) { mustStore(t, mk.storeHWM(full)) }, -1, full},
		{"legacy mark", func(t *testing.T, mk *mark) { mustStore(t, mk.store(full.markRec)) }, -1, plain},
		{"mark before the spool", func(t *testing.T, mk *mark) { mustStore(t, mk.write(encodeHWMv1(v1))) }, -1, v1},
		{"damaged beyond the position", func(t *testing.T, mk *mark) { mustStore(t, mk.storeHWM(full)) }, markLen + 3, plain},
		{"damaged position", func(t *testing.T, mk *mark) { mustStore(t, mk.storeHWM(full)) }, 9, hwmRec{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hwm")
			mk, rec, err := openHWM(path)
			if err != nil {
				t.Fatal(err)
			}
			if rec != (hwmRec{}) {
				t.Fatalf("a new mark reads %+v", rec)
			}
			tc.write(t, mk)
			mk.close()
			if tc.flip >= 0 {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				b[tc.flip] ^= 1
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			mk, rec, err = openHWM(path)
			if err != nil {
				t.Fatal(err)
			}
			mk.close()
			if rec != tc.want {
				t.Fatalf("read %+v, want %+v", rec, tc.want)
			}
		})
	}
}

func mustStore(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// encodeHWMv1 is a mark as an agent before the spool stored it: Next as
// "have", PendNext as "pend".
func encodeHWMv1(r hwmRec) []byte {
	b := make([]byte, hwmV1Len)
	encodeMark(b, r.markRec)
	x := b[markLen:]
	binary.LittleEndian.PutUint64(x, r.Next)
	binary.LittleEndian.PutUint64(x[8:], r.PendNext)
	binary.LittleEndian.PutUint64(x[16:], uint64(r.At))
	binary.LittleEndian.PutUint64(x[24:], r.Ring)
	binary.LittleEndian.PutUint32(x[32:], r.Slot)
	binary.LittleEndian.PutUint32(x[36:], crc32.ChecksumIEEE(x[:36]))
	return b
}
