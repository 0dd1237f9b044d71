# Shimmy: shared-memory channels served as files.
GO        ?= go
BIN       ?= bin/shimmy
BENCH_BIN ?= bin/shimmy-bench
MOUNT     ?= /run/shimmy
STATE_DIR ?= /dev/shm/shimmy
# The race detector slows the multi-process tests; give them room.
TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: build run test vet bench bench-deps bench-full fuzz clean

# The node binary (agent + CLI) and the benchmark against brokers, which
# is kept out of it so that the node links no broker client.
build:
	$(GO) build -o $(BIN) ./cmd/shimmy
	$(GO) build -o $(BENCH_BIN) ./cmd/shimmy-bench

# Runs the node agent on its embedded defaults (no Kubernetes): mounts
# $(MOUNT), keeps channels in $(STATE_DIR). Needs root and /dev/fuse.
run: build
	$(BIN) agent --mount $(MOUNT) --state-dir $(STATE_DIR)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: vet
	$(GO) test $(TEST_FLAGS) ./...

# Ring benchmarks against a bare SPSC ring, a Unix socket pair and a
# futex wake-up, all measured in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./bench/ringbench/

# Debian packages of the servers `shimmy-bench` compares against (Kafka is
# not packaged in Debian 12).
bench-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto nats-server redis-server

# The paper's evaluation against Mosquitto, NATS, Redis and kernel sockets:
# writes bench/results/<date>/ (table, CSV, JSON, plots).
bench-full: build
	$(BENCH_BIN)

# Runs each fuzzer for a while; seeds in testdata/fuzz run in every `make test`.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./channel/
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 120s ./channel/

clean:
	rm -rf bin
