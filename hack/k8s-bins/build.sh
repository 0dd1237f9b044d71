#!/usr/bin/env bash
# Builds the Kubernetes binaries the integration tests run (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and, for the
# real-node tests, kubelet) from this tool module, with the Go module proxy alone, into
# .cache/k8s-bins/<key>/ at the repository's root, where <key> hashes this
# module's go.mod and go.sum and the Go version. A warm cache builds nothing.
# Prints the binaries' directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

key=$( { cat go.mod go.sum; go env GOVERSION; } | sha256sum | cut -c1-16)
cache="$root/.cache/k8s-bins"
out="$cache/$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet etcd kubectl)

warm() {
  local b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}

mkdir -p "$cache"
# Test packages run in parallel and may all find the cache cold: one builds.
exec 9>"$cache/.lock"
flock 9
if warm; then
  echo "$out"
  exit 0
fi

version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)   # v1.34.4
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags=""
# Without these the binaries report v0.0.0-master and kubectl warns of skew.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "k8s-bins: building ${bins[*]} $version into $out (cold: several minutes)" >&2
start=$SECONDS
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3
mv "$tmp/server" "$tmp/etcd"   # go names the etcd main after its path, .../server/v3
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "k8s-bins: built in $((SECONDS - start)) s" >&2
echo "$out"
