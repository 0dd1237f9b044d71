# Shimmy: shared-memory channels served as files.
GO        ?= go
BIN       ?= bin/shimmy
MOUNT     ?= /run/shimmy
STATE_DIR ?= /dev/shm/shimmy
# The race detector slows the multi-process tests; give them room.
TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: build run test vet k8s-bins codegen bench bench-deps bench-full fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/shimmy

# Runs the node agent on its embedded defaults (no Kubernetes): mounts
# $(MOUNT), keeps channels in $(STATE_DIR). Needs root and /dev/fuse.
run: build
	$(BIN) agent --mount $(MOUNT) --state-dir $(STATE_DIR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# The Kubernetes tests (test/k8s) run etcd and kube-apiserver built from the
# tool module hack/k8s-bins; building them first keeps a cold build (minutes)
# out of the tests' timeout. A warm cache (.cache/k8s-bins) returns at once.
test: vet k8s-bins
	$(GO) test $(TEST_FLAGS) ./...

k8s-bins:
	hack/k8s-bins/build.sh >/dev/null

# Regenerates deep copies, clientset, listers, informers and the CRD from
# k8s/apis (TestGeneratedUpToDate checks that this was done).
codegen:
	hack/update-codegen.sh

# Ring benchmarks against a bare SPSC ring, a Unix socket pair and a
# futex wake-up, all measured in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./bench/ringbench/

# Debian packages of the servers `shimmy bench` compares against (Kafka is
# not packaged in Debian 12).
bench-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto nats-server redis-server

# The paper's evaluation against Mosquitto, NATS, Redis and kernel sockets:
# writes bench/results/<date>/ (table, CSV, JSON, plots).
bench-full: build
	$(BIN) bench

# Runs each fuzzer for a while; seeds in testdata/fuzz run in every `make test`.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 120s ./channel/

clean:
	rm -rf bin
