#!/bin/sh
# host.sh: the image pipeline as host processes against a host agent, with
# the channels of channels.yaml made through the files (mkdir, ctl): the
# same programs and settings as in pods, for comparison
# (docs/kubernetes.md, "The image pipeline").
#
#   sh examples/pipeline/host.sh [frames] [fps] [workers]
#
# Defaults: 5000 frames at full speed (fps 0), 3 workers. $MOUNT is the
# agent's mount (default /run/shimmy; `make run` mounts it); $NS the
# namespace (default vision-host), removed at the end. It prints the sink's
# report and exits non-zero unless every frame arrived exactly once, intact.
set -eu

FRAMES=${1:-5000}
FPS=${2:-0}
WORKERS=${3:-3}
M=${MOUNT:-/run/shimmy}
D=$M/${NS:-vision-host}
cd "$(dirname "$0")/../.."
BIN=$(mktemp -d)
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for c in frames results control; do
		i=0
		while [ -d "$D/$c" ] && ! rmdir "$D/$c" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	done
	rmdir "$D" 2>/dev/null || true
	rm -rf "$BIN"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$BIN/" ./examples/pipeline/camera ./examples/pipeline/worker ./examples/pipeline/sink

# The channels, as channels.yaml describes them.
mkdir -p "$D/frames" "$D/results" "$D/control"
printf 'type stream\ncapacity 4M\nmax_message 128K\n' >"$D/frames/ctl"
printf 'type pubsub\npolicy block\ncapacity 1M\n' >"$D/results/ctl"
printf 'type pubsub\npolicy overwrite\ncapacity 64K\nmax_message 4K\n' >"$D/control/ctl"

export SHIMMY_CHANNEL_FRAMES=$D/frames SHIMMY_CHANNEL_RESULTS=$D/results SHIMMY_CHANNEL_CONTROL=$D/control
"$BIN/sink" >"$BIN/sink.out" 2>"$BIN/sink.err" &
pids="$pids $!"
i=1
while [ $i -le "$WORKERS" ]; do
	POD_NAME=worker-$i "$BIN/worker" 2>>"$BIN/workers.err" &
	pids="$pids $!"
	i=$((i + 1))
done
"$BIN/camera" 2>"$BIN/camera.err" &
pids="$pids $!"

# Every member attached (sink, workers, camera) before the run starts:
# the camera and the sink see only what comes after they subscribed.
until [ "$(sed -n 's/^subscribers //p' "$D/frames/stats")" -ge "$WORKERS" ] &&
	grep -q '^subscribers 1$' "$D/results/stats" &&
	grep -q '^publishers 1$' "$D/control/stats" &&
	grep -q '^subscribers 1$' "$D/control/stats"; do
	sleep 0.1
done

echo "run 1 $FRAMES $FPS" >"$D/control/pub"
i=0
until grep -q '^report run=1 ' "$BIN/sink.out"; do
	i=$((i + 1))
	if [ $i -gt 6000 ]; then
		echo "host.sh: no report after 10 minutes" >&2
		cat "$BIN/sink.err" "$BIN/workers.err" "$BIN/camera.err" >&2
		exit 1
	fi
	sleep 0.1
done
cat "$BIN/sink.out"
grep -q "^report run=1 frames=$FRAMES received=$FRAMES duplicates=0 missing=0 checksum_failures=0 " "$BIN/sink.out"
