// Package chanfile is the vocabulary of a channel directory shared by the
// FUSE tree (package fs), the CLI and the tests: the file names, and the
// "key value" text of the config, stats, ctl and error files (parse and
// render). docs/filesystem.md describes the files for users.
package chanfile

// Names of the files in a channel directory.
const (
	Ring      = "ring"       // the ring, to mmap
	Pub       = "pub"        // write: one message per write(2)
	PubLines  = "publines"   // write: one message per line
	Sub       = "sub"        // read: whole messages, newline-terminated
	SubOldest = "sub.oldest" // sub from the oldest retained message
	Msg       = "msg"        // read: one raw message per read(2)
	MsgOldest = "msg.oldest" // msg from the oldest retained message
	Config    = "config"     // read: the configuration
	Stats     = "stats"      // read: live counters
	Lost      = "lost"       // read: messages the caller's own subscribers lost (pubsub)
	Ctl       = "ctl"        // write: reconfigure
	Error     = "error"      // read: why the last change was refused
)

// Directions of a stream channel: queue 0 is "up", queue 1 "down".
var Directions = [2]string{"up", "down"}

// StreamFile names a data file of a stream direction: StreamFile(0, Pub)
// is "up.pub".
func StreamFile(queue int, base string) string { return Directions[queue] + "." + base }
