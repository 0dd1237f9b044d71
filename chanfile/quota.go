package chanfile

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/registry"
)

// Quota names the file of a namespace directory that shows its quota and
// usage and that root writes to change the quota (a channel name cannot
// start with '.', so it never hides a channel).
const Quota = ".quota"

// FormatQuota renders a namespace's .quota file: the limits (0: none),
// what its channels take, and the last refusal.
func FormatQuota(q registry.Quota, u registry.Usage, lastErr string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "max_channels %d\nmax_bytes %d\nmax_member_slots %d\n", q.Channels, q.Bytes, q.MemberSlots)
	fmt.Fprintf(&b, "channels %d\nbytes %d\nmember_slots %d\n", u.Channels, u.Bytes, u.MemberSlots)
	if lastErr != "" {
		fmt.Fprintf(&b, "error %s\n", lastErr)
	}
	return []byte(b.String())
}

// ParseQuota applies the "key value" lines written to .quota (keys
// max_channels, max_bytes, max_member_slots; 0 lifts a limit; max_bytes
// takes size suffixes) to q. Errors wrap registry.ErrInvalidConfig.
func ParseQuota(text string, q registry.Quota) (registry.Quota, error) {
	err := eachLine(text, func(k, v string) error {
		var err error
		switch k {
		case "max_channels":
			q.Channels, err = strconv.ParseInt(v, 10, 64)
		case "max_member_slots":
			q.MemberSlots, err = strconv.ParseInt(v, 10, 64)
		case "max_bytes":
			var n uint64
			n, err = channel.ParseSize(v)
			q.Bytes = int64(n)
		default:
			return invalid("unknown key %q (want max_channels, max_bytes or max_member_slots)", k)
		}
		if err != nil {
			return invalid("%s: %v", k, err)
		}
		return nil
	})
	return q, err
}
