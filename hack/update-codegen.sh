#!/usr/bin/env bash
# Regenerates what the API types in k8s/apis imply: deep copies, the typed
# clientset, listers and informers (k8s/client) and the CRD manifest
# (deploy/crd). The generators come from the tool module hack/codegen (Go
# module proxy only), built once into .cache/codegen/<key>/.
#
#   hack/update-codegen.sh [ROOT]
#
# ROOT (default: this repository) is the tree to generate in; the codegen
# test passes a copy of the repository to check that the committed files
# are what the generators write.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "${1:-$repo}" && pwd)
module=github.com/shimmy-dev/shimmy
apis=$module/k8s/apis/shimmy/v1alpha1
header=$repo/hack/boilerplate.go.txt

key=$( { cat "$repo/hack/codegen/go.mod" "$repo/hack/codegen/go.sum"; go env GOVERSION; } | sha256sum | cut -c1-16)
bin=$repo/.cache/codegen/$key
mkdir -p "$repo/.cache/codegen"
exec 9>"$repo/.cache/codegen/.lock"
flock 9
if [ ! -x "$bin/controller-gen" ]; then
  tmp=$(mktemp -d "$repo/.cache/codegen/.build.XXXXXX")
  (cd "$repo/hack/codegen" && go build -trimpath -o "$tmp/" \
    k8s.io/code-generator/cmd/deepcopy-gen k8s.io/code-generator/cmd/client-gen \
    k8s.io/code-generator/cmd/lister-gen k8s.io/code-generator/cmd/informer-gen \
    sigs.k8s.io/controller-tools/cmd/controller-gen)
  rm -rf "$bin" && mv "$tmp" "$bin"
fi
flock -u 9

cd "$root"
rm -rf k8s/client deploy/crd
"$bin/deepcopy-gen" --go-header-file "$header" --output-file zz_generated.deepcopy.go "$apis"
"$bin/client-gen" --go-header-file "$header" --clientset-name versioned \
  --input-base "" --input "$apis" \
  --output-dir k8s/client/clientset --output-pkg "$module/k8s/client/clientset"
"$bin/lister-gen" --go-header-file "$header" \
  --output-dir k8s/client/listers --output-pkg "$module/k8s/client/listers" "$apis"
"$bin/informer-gen" --go-header-file "$header" \
  --versioned-clientset-package "$module/k8s/client/clientset/versioned" \
  --listers-package "$module/k8s/client/listers" \
  --output-dir k8s/client/informers --output-pkg "$module/k8s/client/informers" "$apis"
"$bin/controller-gen" crd:crdVersions=v1 paths=./k8s/apis/... output:crd:dir=deploy/crd
