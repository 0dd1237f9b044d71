package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/shimmy-dev/shimmy/channel"
)

// imports remembers which member slots this host's importers published
// from, and over which range of ring positions, per channel and epoch, so
// that exporters skip what the importers wrote (no relaying, no loops).
// It is kept in the state directory: after a restart an exporter resumes
// behind frames the previous run's importers wrote.
//
// A frame is an import if an entry has its slot and the frame lies at or
// after From and, for a closed entry, before To. An entry is closed when
// its publisher closes, or, after a crash, when the next run starts (at
// the ring's tail then). A tenant publisher that took a dead importer's
// slot before the next run started (the agent was down longer than the
// channel's lease) is taken for an import until then.
type imports struct {
	path string
	mu   sync.Mutex
	doc  importsDoc
	// view is a copy of doc.Entries, replaced on every change, that is
	// read without the lock: exporters ask about every message.
	view atomic.Pointer[[]importEntry]
	// claims: the importers' latest claims, in memory (claims.go).
	claims importClaims
}

type importsDoc struct {
	Epoch   uint64        `json:"epoch"`
	Entries []importEntry `json:"entries"`
}

type importEntry struct {
	Slot uint32           `json:"slot"`
	From channel.Position `json:"from"`
	To   channel.Position `json:"to"`
	Open bool             `json:"open"`
}

// maxImportEntries bounds the history; the oldest closed entries go first.
const maxImportEntries = 64

// loadImports reads the history of k's queue for a ring of epoch whose
// queue tail is now tail, and closes the entries a previous run left open.
func (s *state) loadImports(k chanKey, epoch uint64, tail channel.Position) (*imports, error) {
	im := &imports{path: s.importsPath(k)}
	b, err := os.ReadFile(im.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("mirror: state: %w", err)
	default:
		if json.Unmarshal(b, &im.doc) != nil {
			im.doc = importsDoc{}
		}
	}
	if im.doc.Epoch != epoch {
		im.doc = importsDoc{Epoch: epoch}
	}
	for i := range im.doc.Entries {
		if e := &im.doc.Entries[i]; e.Open {
			e.Open, e.To = false, tail
		}
	}
	if err := im.claims.open(claimsPath(im.path), epoch); err != nil {
		return nil, err
	}
	if err := im.saveLocked(); err != nil {
		im.claims.close()
		return nil, err
	}
	return im, nil
}

// importsPath is the file of k's import history.
func (s *state) importsPath(k chanKey) string {
	name := k.Ch + ".json" // queue 0, and every pubsub channel
	if k.Q != 0 {
		name = k.Ch + "." + strconv.Itoa(k.Q) + ".json"
	}
	return filepath.Join(s.dir, "imports", k.NS, name)
}

// claimsPath is the claims file (claims.go) beside the history at path.
func claimsPath(path string) string { return strings.TrimSuffix(path, ".json") + ".claims" }

// importHistories lists the import history files (and claims files),
// each with the queues its name may stand for (a channel name may end in
// "." and digits).
func (s *state) importHistories() map[string][]chanKey {
	out := map[string][]chanKey{}
	nss, _ := os.ReadDir(filepath.Join(s.dir, "imports"))
	for _, nd := range nss {
		files, _ := os.ReadDir(filepath.Join(s.dir, "imports", nd.Name()))
		for _, f := range files {
			name, ok := strings.CutSuffix(f.Name(), ".json")
			if !ok {
				if name, ok = strings.CutSuffix(f.Name(), ".claims"); !ok {
					continue
				}
			}
			p := filepath.Join(s.dir, "imports", nd.Name(), f.Name())
			out[p] = []chanKey{{NS: nd.Name(), Ch: name}}
			if ch, ok := shareFile(name); ok {
				out[p] = append(out[p], chanKey{NS: nd.Name(), Ch: ch, Q: 1})
			}
		}
	}
	return out
}

// add records that slot publishes imports from position from on.
func (im *imports) add(slot uint32, from channel.Position) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.doc.Entries = append(im.doc.Entries, importEntry{Slot: slot, From: from, Open: true})
	if n := len(im.doc.Entries); n > maxImportEntries {
		im.doc.Entries = append(im.doc.Entries[:0], im.doc.Entries[n-maxImportEntries:]...)
	}
	return im.saveLocked()
}

// end closes slot's open entry at position to.
func (im *imports) end(slot uint32, to channel.Position) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	for i := range im.doc.Entries {
		if e := &im.doc.Entries[i]; e.Open && e.Slot == slot {
			e.Open, e.To = false, to
		}
	}
	return im.saveLocked()
}

// is reports whether the frame written from slot that ends at position
// after (where the next frame starts) is an import. Entries start and end
// at frame boundaries (a tail), so a frame lies at or after From exactly
// when it ends after it, and before To when it ends at or before it.
func (im *imports) is(slot uint32, after channel.Position) bool {
	for _, e := range *im.view.Load() {
		if e.Slot == slot && e.From.Before(after) && (e.Open || !e.To.Before(after)) {
			return true
		}
	}
	return false
}

func (im *imports) saveLocked() error {
	view := append([]importEntry(nil), im.doc.Entries...)
	im.view.Store(&view)
	b, err := json.Marshal(im.doc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(im.path), 0o700); err != nil {
		return fmt.Errorf("mirror: state: %w", err)
	}
	tmp := im.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("mirror: state: %w", err)
	}
	if err := os.Rename(tmp, im.path); err != nil {
		return fmt.Errorf("mirror: state: %w", err)
	}
	return nil
}
