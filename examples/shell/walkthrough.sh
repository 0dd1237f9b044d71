#!/bin/sh
# walkthrough.sh: the README's shell walkthrough as a script. It uses only
# the files of the mount (no library, no shimmy binary): it makes a
# namespace and two channels, publishes with echo and printf, subscribes
# with cat and head, reads config and stats, configures a stream channel
# through ctl, and removes everything it made.
#
# Run it against a running agent (`make run` mounts /run/shimmy):
#
#   sh examples/shell/walkthrough.sh [mount] [namespace]
#
# The mount defaults to /run/shimmy, the namespace to "demo". Channels
# demo/chat and demo/jobs are removed first if they exist and are idle.
set -eu

M=${1:-/run/shimmy}
NS=${2:-demo}
D=$M/$NS
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rmdir "$D/chat" "$D/jobs" 2>/dev/null || true
	rmdir "$D" 2>/dev/null || true
}
trap cleanup EXIT

# wait_subscribers DIR N: the files a subscriber opened show up in stats
# as it opens them; publish only after that, because sub starts at the
# next message.
wait_subscribers() {
	i=0
	until [ "$(sed -n 's/^subscribers //p' "$1/stats")" -ge "$2" ]; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { echo "no subscriber on $1 after 10s" >&2; exit 1; }
		sleep 0.05
	done
}

# expect WHAT GOT WANT
expect() {
	if [ "$2" != "$3" ]; then
		printf '%s: got %s, want %s\n' "$1" "$2" "$3" >&2
		exit 1
	fi
}

mountpoint -q "$M" || { echo "$M is not a mount point: is the agent running?" >&2; exit 1; }
rmdir "$D/chat" "$D/jobs" 2>/dev/null || true

echo "== a namespace and a channel, with defaults"
mkdir -p "$D/chat"
ls "$D/chat"
cat "$D/chat/config"

echo "== a subscriber, then a publisher: one write(2) is one message"
tmp=$(mktemp -d)
cat "$D/chat/sub" > "$tmp/cat.out" &
pids="$pids $!"
wait_subscribers "$D/chat" 1
echo hello > "$D/chat/pub"

echo "== publines: one line is one message; head reads the next three"
head -n 3 "$D/chat/sub" > "$tmp/head.out" &
headpid=$!
pids="$pids $headpid"
wait_subscribers "$D/chat" 2
printf 'one\ntwo\nthree\n' > "$D/chat/publines"
wait "$headpid"
cat "$tmp/head.out"
expect "head -n 3 sub" "$(cat "$tmp/head.out" | tr '\n' ' ')" "one two three "

# cat (a subscriber since before "hello") saw all four messages.
i=0
until [ "$(wc -l < "$tmp/cat.out")" -ge 4 ]; do
	i=$((i + 1))
	[ "$i" -lt 200 ] || { echo "cat sub got only: $(cat "$tmp/cat.out")" >&2; exit 1; }
	sleep 0.05
done
expect "cat sub" "$(tr '\n' ' ' < "$tmp/cat.out")" "hello one two three "
rm -r "$tmp"

echo "== stats"
cat "$D/chat/stats"
expect "stats messages" "$(sed -n 's/^messages //p' "$D/chat/stats")" 4

echo "== a stream channel, configured through ctl before first use"
mkdir "$D/jobs"
# A bad value fails the whole write with EINVAL; the reason is in error.
if printf 'type stream\ncapacity 3000\n' > "$D/jobs/ctl" 2>/dev/null; then
	echo "ctl accepted capacity 3000" >&2
	exit 1
fi
echo "error: $(cat "$D/jobs/error")"
printf 'type stream\ncapacity 4M\nmax_message 256K\n' > "$D/jobs/ctl"
grep -E '^(type|capacity|max_message) ' "$D/jobs/config"
echo job-1 > "$D/jobs/up.pub"
# up.msg gives one raw message per read(2): read exactly one.
got=$(dd if="$D/jobs/up.msg" bs=256k count=1 status=none)
expect "up.msg" "$got" "job-1"
echo "a reader took: $got"

echo "walkthrough ok"
