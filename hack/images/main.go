// Command images builds the project's container images from static
// binaries (CGO_ENABLED=0) as docker-archive tars, with no registry and no
// container build tool, and optionally loads them into containerd or
// Docker. `make images` runs it.
//
//	shimmy:dev         the node binary (/shimmy) and busybox (for the
//	                   DaemonSet's preStop hook and debugging)
//	shimmy-client:dev  busybox-static (sh, cat, echo, ...), the mmap
//	                   examples (/bin/mmap-pub, /bin/mmap-sub) and the image
//	                   pipeline's programs (/bin/pipeline-camera,
//	                   /bin/pipeline-worker, /bin/pipeline-sink); its default
//	                   command sleeps, so it also serves as a sandbox image
//
// Usage:
//
//	go run ./hack/images [-out .cache/images] [-load ctr -address /run/containerd/containerd.sock] [-load docker]
package main

import (
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/shimmy-dev/shimmy/internal/image"
)

// Busybox is Debian's busybox-static: one static binary with every applet.
const busybox = "/bin/busybox"

func main() {
	out := flag.String("out", ".cache/images", "directory of the image tars")
	load := flag.String("load", "", `also load the images: "ctr" (containerd, namespace k8s.io) or "docker"`)
	address := flag.String("address", "/run/containerd/containerd.sock", "containerd's socket, for -load ctr")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("images: ")
	if err := run(*out, *load, *address); err != nil {
		log.Fatal(err)
	}
}

func run(out, load, address string) error {
	loader, err := loaderFor(load, address)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	bin, err := os.MkdirTemp("", "shimmy-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	if err := goBuild(bin, "./cmd/shimmy", "./examples/mmap-pub", "./examples/mmap-sub",
		"./examples/pipeline/camera", "./examples/pipeline/worker", "./examples/pipeline/sink"); err != nil {
		return err
	}
	bb, err := busyboxFiles()
	if err != nil {
		return err
	}
	shimmy, err := files(bin, map[string]string{"shimmy": "/shimmy"})
	if err != nil {
		return err
	}
	clients, err := files(bin, map[string]string{
		"mmap-pub": "/bin/mmap-pub", "mmap-sub": "/bin/mmap-sub",
		"camera": "/bin/pipeline-camera", "worker": "/bin/pipeline-worker", "sink": "/bin/pipeline-sink",
	})
	if err != nil {
		return err
	}
	env := []string{"PATH=/bin"}
	for _, img := range []image.Image{
		{Tag: "shimmy:dev", Files: append(shimmy, bb...), Entrypoint: []string{"/shimmy"}, Env: env},
		{Tag: "shimmy-client:dev", Files: append(clients, bb...), Cmd: []string{"sleep", "2147483647"}, Env: env},
	} {
		path := filepath.Join(out, strings.ReplaceAll(img.Tag, ":", "_")+".tar")
		if err := writeArchive(path, img); err != nil {
			return err
		}
		if loader != nil {
			if err := loader(path); err != nil {
				return err
			}
		}
		fmt.Println(path)
	}
	return nil
}

// loaderFor returns the command that loads a tar into the chosen runtime,
// nil for none.
func loaderFor(load, address string) (func(path string) error, error) {
	var argv []string
	switch load {
	case "":
		return nil, nil
	case "ctr":
		argv = []string{"ctr", "--address", address, "-n", "k8s.io", "images", "import"}
	case "docker":
		argv = []string{"docker", "load", "-i"}
	default:
		return nil, fmt.Errorf("-load %q: want ctr or docker", load)
	}
	return func(path string) error {
		cmd := exec.Command(argv[0], append(argv[1:], path)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, b)
		}
		return nil
	}, nil
}

// goBuild builds static binaries of the main packages into dir.
func goBuild(dir string, pkgs ...string) error {
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", dir + "/"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// files reads built binaries (name in dir -> path in the image).
func files(dir string, paths map[string]string) ([]image.File, error) {
	var fs []image.File
	for name, p := range paths {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		fs = append(fs, image.File{Path: p, Data: b})
	}
	return fs, nil
}

// busyboxFiles returns busybox and a link in /bin for each of its applets.
func busyboxFiles() ([]image.File, error) {
	b, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install busybox-static)", err)
	}
	if err := checkStatic(busybox); err != nil {
		return nil, err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	fs := []image.File{{Path: "/bin/busybox", Data: b}}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			fs = append(fs, image.File{Path: "/bin/" + applet, Link: "busybox"})
		}
	}
	return fs, nil
}

// checkStatic fails for a dynamically linked binary, which would not run
// in an image without its libraries.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: apt-get install busybox-static", path)
		}
	}
	return nil
}

// writeArchive writes img to path, replacing it only once complete.
func writeArchive(path string, img image.Image) error {
	var buf bytes.Buffer
	if err := image.Write(&buf, img); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
