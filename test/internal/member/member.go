// Package member is what the end-to-end tests and their channel-member
// helper process (test/e2e/internal/pod) agree on: the messages a run
// publishes, the checksum over them, and the result line the helper prints
// last.
package member

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"
)

// Stop is the message that ends a reader started with -until-stop.
const Stop = "stop"

// Message returns message i of a run: "m%08d" padded with a pattern
// derived from i up to size bytes.
func Message(i, size int) []byte {
	b := []byte(fmt.Sprintf("m%08d", i))
	for len(b) < size {
		b = append(b, byte('a'+(i+len(b))%26))
	}
	return b
}

// Seq returns the number of a message made by Message, and whether its
// bytes are exactly Message(seq, len(msg)) (intact).
func Seq(msg []byte) (seq int, intact bool) {
	if _, err := fmt.Sscanf(string(msg[:min(len(msg), 9)]), "m%08d", &seq); err != nil || len(msg) < 9 {
		return -1, false
	}
	return seq, string(msg) == string(Message(seq, len(msg)))
}

// Fold adds msg to a running checksum over messages in order (FNV-64a of
// each message, folded).
func Fold(sum uint64, msg []byte) uint64 {
	h := fnv.New64a()
	h.Write(msg)
	return sum*1099511628211 ^ h.Sum64()
}

// Fnv is the checksum of messages start..start+n-1 of size bytes, in order.
func Fnv(start, n, size int) uint64 {
	var sum uint64
	for i := start; i < start+n; i++ {
		sum = Fold(sum, Message(i, size))
	}
	return sum
}

// Result is the helper's last line of output.
type Result struct {
	Mode    string `json:"mode"`
	Count   int    `json:"count"`
	Fnv     uint64 `json:"fnv"`     // Fold over the messages in order
	InOrder bool   `json:"inorder"` // every message was the expected next one
	First   string `json:"first,omitempty"`
	Last    string `json:"last,omitempty"`
	Lost    uint64 `json:"lost"`
	// Corrupt counts messages whose bytes were not those of their number.
	Corrupt int `json:"corrupt"`
	// Seqs are the numbers of the messages received, in order (-list).
	Seqs   []int  `json:"seqs,omitempty"`
	Errno  string `json:"errno,omitempty"` // try-* modes: the errno, "" on success
	Data   string `json:"data,omitempty"`  // try-read: what was read
	IPC    string `json:"ipc,omitempty"`   // readlink /proc/self/ns/ipc
	Chan   string `json:"chan,omitempty"`  // the channel directory used
	Hidden string `json:"hidden,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ParseResult parses the last line of a helper's output.
func ParseResult(out string) (Result, error) {
	out = strings.TrimSpace(out)
	var r Result
	err := json.Unmarshal([]byte(out[strings.LastIndexByte(out, '\n')+1:]), &r)
	return r, err
}
