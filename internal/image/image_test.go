package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// readTar returns a tar's regular files by name, and its other entries'
// headers.
func readTar(t *testing.T, b []byte) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, headers := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, headers
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = data
		}
	}
}

// TestArchive reads an archive back as `docker load` and `ctr images
// import` do: manifest, then config, then the layer its diff_id names.
func TestArchive(t *testing.T) {
	img := Image{
		Tag:        "shimmy-client:dev",
		Entrypoint: []string{"/bin/sh"},
		Env:        []string{"PATH=/bin"},
		Files: []File{
			{Path: "/bin/sh", Link: "busybox"},
			{Path: "/bin/busybox", Data: []byte("elf")},
			{Path: "/etc/motd", Mode: 0o644, Data: []byte("hi\n")},
		},
	}
	var out bytes.Buffer
	if err := Write(&out, img); err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, out.Bytes())
	var manifest []manifestEntry
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || !reflect.DeepEqual(manifest[0].RepoTags, []string{img.Tag}) || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json = %+v", manifest)
	}
	config := files[manifest[0].Config]
	if sum := sha256.Sum256(config); manifest[0].Config != hex.EncodeToString(sum[:])+".json" {
		t.Errorf("config %s is not named after its digest", manifest[0].Config)
	}
	var cfg configJSON
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Config.Entrypoint, img.Entrypoint) || !reflect.DeepEqual(cfg.Config.Env, img.Env) || cfg.OS != "linux" {
		t.Errorf("config = %+v", cfg)
	}
	layer := files[manifest[0].Layers[0]]
	sum := sha256.Sum256(layer)
	if want := []string{"sha256:" + hex.EncodeToString(sum[:])}; !reflect.DeepEqual(cfg.RootFS.DiffIDs, want) {
		t.Errorf("diff_ids = %v, want the layer's digest %v", cfg.RootFS.DiffIDs, want)
	}

	lfiles, lheaders := readTar(t, layer)
	if string(lfiles["bin/busybox"]) != "elf" || lheaders["bin/busybox"].Mode != 0o755 {
		t.Errorf("bin/busybox: %q mode %o", lfiles["bin/busybox"], lheaders["bin/busybox"].Mode)
	}
	if string(lfiles["etc/motd"]) != "hi\n" || lheaders["etc/motd"].Mode != 0o644 {
		t.Errorf("etc/motd: %q mode %o", lfiles["etc/motd"], lheaders["etc/motd"].Mode)
	}
	if h := lheaders["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh: %+v, want a link to busybox", h)
	}
	for _, d := range []string{"bin/", "etc/"} {
		if h := lheaders[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("directory %s missing from the layer", d)
		}
	}

	var again bytes.Buffer
	if err := Write(&again, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two archives of one image differ: its digest would change on every build")
	}
}

func TestArchiveRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  Image
		want string
	}{
		{"no tag", Image{Tag: "shimmy"}, "want repository:tag"},
		{"relative path", Image{Tag: "a:b", Files: []File{{Path: "bin/x"}}}, "want an absolute path"},
		{"root", Image{Tag: "a:b", Files: []File{{Path: "/"}}}, "want an absolute path"},
		{"duplicate", Image{Tag: "a:b", Files: []File{{Path: "/x"}, {Path: "/./x"}}}, "/x given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(io.Discard, tc.img)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
