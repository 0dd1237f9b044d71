// Package image writes container images as docker-archive tars (the format
// of `docker save`, which `docker load` and `ctr images import` read), so
// that images made of a few static binaries need no registry and no
// container build tool. An image has one layer.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// File is one entry of the image's layer: a regular file (Data), or a
// symbolic link when Link is set.
type File struct {
	Path string // absolute path in the image, e.g. "/bin/shimmy"
	Mode int64  // permission bits; 0: 0755 for files, ignored for links
	Data []byte
	Link string
}

// Image is what an archive holds.
type Image struct {
	Tag        string // repository:tag, e.g. "shimmy:dev"
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string // KEY=value
	WorkingDir string
}

// Write writes img to w as a docker-archive tar. The output depends only
// on img (fixed times and owners), so an unchanged image keeps its digest.
func Write(w io.Writer, img Image) error {
	if img.Tag == "" || !strings.Contains(img.Tag, ":") {
		return fmt.Errorf("image: tag %q: want repository:tag", img.Tag)
	}
	layer, err := layerTar(img.Files)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(configJSON{
		Architecture: "amd64",
		OS:           "linux",
		Config: runConfig{
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			Env:        img.Env,
			WorkingDir: img.WorkingDir,
		},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{"sha256:" + layerHex}},
	})
	if err != nil {
		return fmt.Errorf("image: config: %w", err)
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := layerHex + "/layer.tar"
	manifest, err := json.Marshal([]manifestEntry{{
		Config:   configName,
		RepoTags: []string{img.Tag},
		Layers:   []string{layerName},
	}})
	if err != nil {
		return fmt.Errorf("image: manifest: %w", err)
	}

	tw := tar.NewWriter(w)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{layerHex + "/", nil},
		{layerName, layer},
		{configName, config},
		{"manifest.json", manifest},
	} {
		if err := writeEntry(tw, e.name, e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

type configJSON struct {
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       runConfig `json:"config"`
	RootFS       rootFS    `json:"rootfs"`
}

type runConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type manifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// writeEntry writes a directory (name ends in "/") or a regular file of
// the archive itself.
func writeEntry(tw *tar.Writer, name string, data []byte) error {
	h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if strings.HasSuffix(name, "/") {
		h.Mode, h.Typeflag = 0o755, tar.TypeDir
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("image: %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("image: %s: %w", name, err)
	}
	return nil
}

// layerTar returns the layer: files and links sorted by path, each parent
// directory added once before its entries.
func layerTar(files []File) ([]byte, error) {
	byPath := make(map[string]File, len(files))
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("image: file path %q: want an absolute path below /", f.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("image: %s given twice", p)
		}
		byPath[p] = f
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range paths {
		if err := addDirs(tw, dirs, path.Dir(p)); err != nil {
			return nil, err
		}
		f := byPath[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Format: tar.FormatPAX}
		switch {
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, f.Mode, int64(len(f.Data))
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: %s: %w", p, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("image: %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return buf.Bytes(), nil
}

// addDirs writes dir and its missing parents as 0755 directories.
func addDirs(tw *tar.Writer, done map[string]bool, dir string) error {
	if dir == "/" || done[dir] {
		return nil
	}
	if err := addDirs(tw, done, path.Dir(dir)); err != nil {
		return err
	}
	done[dir] = true
	h := &tar.Header{Name: strings.TrimPrefix(dir, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("image: %s: %w", dir, err)
	}
	return nil
}
