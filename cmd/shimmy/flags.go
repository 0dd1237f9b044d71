package main

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shimmy-dev/shimmy/agent"
	"github.com/shimmy-dev/shimmy/channel"
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

// sizeFlag is a flag.Value for sizes; set records whether it was given.
type sizeFlag struct {
	n   uint64
	set bool
}

func (f *sizeFlag) String() string {
	if f == nil {
		return "0"
	}
	return channel.FormatSize(f.n)
}

func (f *sizeFlag) Set(s string) error {
	n, err := channel.ParseSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

// textFlag is a flag.Value over a value with a text form (channel.Type,
// channel.Policy, registry.Backing); set records whether it was given.
type textFlag struct {
	v interface {
		fmt.Stringer
		encoding.TextUnmarshaler
	}
	set bool
}

func (f *textFlag) String() string {
	if f == nil || f.v == nil {
		return ""
	}
	return f.v.String()
}

func (f *textFlag) Set(s string) error {
	if err := f.v.UnmarshalText([]byte(s)); err != nil {
		return err
	}
	f.set = true
	return nil
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

// defaultMount is $SHIMMY_MOUNT, else the agent's default mount point.
func defaultMount(e *env) string {
	if m := e.getenv("SHIMMY_MOUNT"); m != "" {
		return m
	}
	return agent.DefaultMountPoint
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
