package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shimmy-dev/shimmy/registry"
)

// flagSet is a flag.FlagSet with the text its --help prints.
type flagSet struct {
	*flag.FlagSet
	synopsis, description, example string
}

func newFlagSet(name, synopsis, description, example string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, description: description, example: example}
	fs.SetOutput(io.Discard) // errors are reported once, by run
	return fs
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage:\n  %s\n\n%s\n", fs.synopsis, fs.description)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n", strings.ReplaceAll(fs.example, "\n", "\n  "))
}

// parse parses flags and positional arguments in any order (flag stops at
// the first positional argument; "shimmy sub demo/chat -n 3" should work)
// and checks the number of positional arguments (max < 0: no limit).
func parse(fs *flagSet, e *env, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printUsage(e.stdout)
				return nil, errHelpShown
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// "--" ends the flags: everything after it is positional.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < min:
		return nil, usagef("missing argument (usage: %s)", fs.synopsis)
	case max >= 0 && len(pos) > max:
		return nil, usagef("unexpected argument %q (usage: %s)", pos[max], fs.synopsis)
	}
	return pos, nil
}

// parseSize reads a byte count with an optional K, M or G suffix (powers of
// 1024: 1M = 1<<20); "KB", "KiB" and lower case are accepted too.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "b")
	t = strings.TrimSuffix(strings.TrimSuffix(t, "i"), "I")
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want a number with an optional K, M or G suffix)", s)
	}
	if n > math.MaxUint64>>shift {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return n << shift, nil
}

// sizeFlag is a flag.Value for sizes; set records whether it was given.
type sizeFlag struct {
	n   uint64
	set bool
}

func (f *sizeFlag) String() string {
	if f == nil {
		return "0"
	}
	return formatSize(f.n)
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

// formatSize prints n with the largest suffix that divides it exactly.
func formatSize(n uint64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// modeFlag is an octal permission mode.
type modeFlag struct {
	mode uint32
	set  bool
}

func (f *modeFlag) String() string {
	if f == nil {
		return "0"
	}
	return fmt.Sprintf("%#o", f.mode)
}

func (f *modeFlag) Set(s string) error {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return fmt.Errorf("invalid mode %q (want octal, e.g. 0660)", s)
	}
	f.mode, f.set = uint32(m), true
	return nil
}

// choiceFlag accepts one of a fixed set of words.
type choiceFlag struct {
	val     string
	choices []string
	set     bool
}

func (f *choiceFlag) String() string {
	if f == nil {
		return ""
	}
	return f.val
}

func (f *choiceFlag) Set(s string) error {
	for _, c := range f.choices {
		if s == c {
			f.val, f.set = s, true
			return nil
		}
	}
	return fmt.Errorf("invalid value %q (want %s)", s, strings.Join(f.choices, " or "))
}

// defaultMount is $SHIMMY_MOUNT, else /run/shimmy.
func defaultMount(e *env) string {
	if m := e.getenv("SHIMMY_MOUNT"); m != "" {
		return m
	}
	return "/run/shimmy"
}

// channelDir turns a channel argument into its directory: "ns/ch" lies
// under the mount; an absolute path (what a pod with a hostPath volume
// gets, e.g. $SHIMMY_CHANNEL) is used as it is.
func channelDir(mount, arg string) (string, error) {
	if filepath.IsAbs(arg) {
		return filepath.Clean(arg), nil
	}
	parts := strings.Split(strings.Trim(arg, "/"), "/")
	if len(parts) != 2 || !registry.ValidName(parts[0]) || !registry.ValidName(parts[1]) {
		return "", usagef("invalid channel %q (want <namespace>/<channel>, names of 1 to 63 letters, digits, '.', '_' or '-', or an absolute directory path)", arg)
	}
	return filepath.Join(mount, parts[0], parts[1]), nil
}
