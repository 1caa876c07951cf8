# edgemirror — see README.md. Two commands matter to a newcomer:
#   make demo   run the whole product end to end (no Kafka needed; ~20 s, plus a few minutes
#               of module downloads and compilation the first time)
#   make test   run every test, including the real Apache Kafka suite
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Build date: SOURCE_DATE_EPOCH when set (reproducible builds), else now.
DATE ?= $(shell date -u -d @$${SOURCE_DATE_EPOCH:-$$(date +%s)} +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
BIN := bin/edgemirror

.PHONY: all build dist demo test test-unit test-e2e test-packaging test-realkafka vet fuzz bench bench-quick bench-go bench-rss clean

all: build

build: ## static binary, no cgo
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/edgemirror

dist: ## release: static binaries for linux/amd64, arm64 and arm (v7), .deb and .rpm of each, SHA256SUMS, in dist/
	$(GO) run ./packaging/dist --out dist --version '$(VERSION)' --commit '$(COMMIT)' --date '$(DATE)'

demo: ## edge + hub (in-process), agent, aggregator, link cut, verification
	@# One go build for both programs: they share most dependencies.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/edgemirror ./test/demo
	bin/demo --bin $(BIN)

test: vet test-unit test-realkafka ## everything CI runs

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt needed on the files above" && false)

test-unit: build ## unit tests (race detector) and the in-process end-to-end suite
	EDGEMIRROR_BIN=$(CURDIR)/$(BIN) $(GO) test -race -timeout 20m ./...

test-e2e: build
	EDGEMIRROR_BIN=$(CURDIR)/$(BIN) $(GO) test -race -timeout 10m -v ./test/e2e/

test-packaging: ## release files, .deb in a throwaway root, .rpm, units, arm64/armv7 under qemu (part of test-unit)
	$(GO) test -timeout 10m -count=1 -v ./test/packaging/

bench-rss: ## agent RSS idle and busy: native amd64, arm64 and armv7 under qemu-user-static
	$(GO) test -run '^$$' -bench AgentRSS -benchtime 1x ./test/packaging/

test-realkafka: build ## end-to-end suite against real Apache Kafka brokers (downloads Kafka once)
	@# -p 1: each package starts its own JVMs; two at once starve 2 cores.
	EDGEMIRROR_BIN=$(CURDIR)/$(BIN) $(GO) test -tags realkafka -timeout 45m -p 1 -v -count=1 ./test/realkafka/ ./test/kafka/
	@# Package tests that need a real broker's transaction fencing (kfake is not Kafka).
	$(GO) test -tags realkafka -timeout 10m -v -count=1 -run RealKafka ./aggregator/

FUZZTIME ?= 30s
fuzz: ## run every fuzz target in the repository for FUZZTIME each (default 30s)
	@# go test -fuzz takes one target of one package at a time: find them all.
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r dir; do \
		for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2 | sort -u); do \
			echo "== $$dir $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$dir; \
		done; \
	done

bench: build ## full benchmark matrix: edgemirror vs MirrorMaker 2 over an emulated WAN
	$(GO) test -run '^$$' -bench . -benchmem ./buffer ./internal/wire ./aggregator
	$(GO) test -run '^$$' -bench ReadLoopBacklog -benchtime 5x ./agent
	EDGEMIRROR_BIN=$(CURDIR)/$(BIN) $(GO) run ./test/bench --bin $(BIN) --matrix full

bench-quick: build ## small matrix (sensor, lan + wan, 200k records), under 5 minutes
	EDGEMIRROR_BIN=$(CURDIR)/$(BIN) $(GO) run ./test/bench --bin $(BIN) --matrix quick

clean:
	rm -rf bin dist
