# kvtx: the two commands a new user needs are `make run` and `make test`.
GO      ?= go
BIN     ?= bin
PKGS    := ./...
# Packages with concurrency run under the race detector (cmd/chaos: the unit tests of its
# checkers and schedule; its fault runs are chaos-short and chaos).
RACE_PKGS := ./wire/... ./kv/... ./txn/... ./bench/... ./cmd/chaos/ ./cmd/internal/cluster/

.PHONY: all build deps run test unit sim e2e fuzz vet fmt-check clean chaos chaos-short soak soak-short

all: build

## build: put kvmaster, kvnode, kvctl and lossyfs in ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/kvmaster ./cmd/kvnode ./cmd/kvctl ./cmd/lossyfs

## run: start a local master and two nodes on the built-in defaults (data under ./data), over mutual TLS with development certificates made in ./data/certs on the first run; Ctrl-C stops all three
run: build
	@mkdir -p data
	@if [ ! -e data/certs/ca.crt ]; then $(BIN)/kvctl cert init --certs-dir data/certs; fi
	@echo "kvtx: master on 127.0.0.1:9000, nodes on :9001 and :9002, metrics on :9100-9102, TLS with data/certs. Ctrl-C stops all three."
	@trap 'kill -INT $$n1 $$n2 $$m 2>/dev/null; wait' INT TERM; \
	$(BIN)/kvnode node1 & n1=$$!; \
	$(BIN)/kvnode node2 & n2=$$!; \
	$(BIN)/kvmaster & m=$$!; \
	wait

## test: formatting, vet, unit tests (race detector on the concurrent packages; kv's includes the power-loss test), the lossy file system's own tests, fuzz seeds, deterministic simulation, end-to-end tests (with power cuts), short soak, short fault-injection run
test: deps fmt-check vet unit alerts-test lossyfs-test sim e2e soak-short chaos-short

## deps: the Debian packages the tests use (a real Prometheus server, a real etcd, iproute2's ip for the network namespaces of cmd/e2e), installed when missing
deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages prometheus, etcd-server and iproute2 (the tests run prometheus and etcd, and ip makes network namespaces)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus etcd-server iproute2 >/dev/null; \
	  else \
	    echo "make test needs the prometheus, etcd and ip binaries: apt-get install prometheus etcd-server iproute2"; exit 1; \
	  fi; \
	fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags crashpoints $(PKGS)

unit:
	$(GO) test -race -count=1 -skip '^TestChaos$$' $(RACE_PKGS)

## sim: the deterministic simulation of the protocol over SIM_SEEDS seeds (SIM_SEED=S replays one and prints its trace)
SIM_SEEDS ?= 5000
SIM_SEED  ?=
sim:
	KVTX_SIM_SEEDS=$(SIM_SEEDS) KVTX_SIM_SEED=$(SIM_SEED) $(GO) test -count=1 -timeout 30m -v -run 'TestSimulation$$' ./txn/

e2e:
	$(GO) test -count=1 -timeout 15m ./cmd/e2e/ ./cmd/kvctl/

## alerts-test: the Prometheus alert rules parse, and fire when their unit tests say (promtool ships with Debian's prometheus)
.PHONY: alerts-test
alerts-test:
	promtool check rules txn/server/monitoring/alerts.yml
	cd txn/server/monitoring && promtool test rules alerts_test.yml

## lossyfs-test: the power-loss file system's own tests (real FUSE mounts: needs root and /dev/fuse)
.PHONY: lossyfs-test
lossyfs-test:
	$(GO) test -count=1 -timeout 5m ./cmd/lossyfs/...

## chaos-short: every fault kind for a few seconds against real processes, with history checks, under each commit protocol (part of make test)
chaos-short:
	CHAOS_MODE=short CHAOS_PROTOCOL=classic $(GO) test -count=1 -v -timeout 10m -run TestChaos ./cmd/chaos/
	CHAOS_MODE=short CHAOS_PROTOCOL=parallel $(GO) test -count=1 -v -timeout 10m -run TestChaos ./cmd/chaos/

## chaos: the long fault-injection run (CHAOS_SECONDS of faults per kind, CHAOS_SEED replays, CHAOS_FAULTS=kill,... selects, CHAOS_PROTOCOL=classic|parallel the commit protocol, reports in CHAOS_OUT)
CHAOS_SECONDS  ?= 60
CHAOS_SEED     ?=
CHAOS_FAULTS   ?=
CHAOS_PROTOCOL ?=
CHAOS_OUT      ?= chaos-out
chaos:
	CHAOS_MODE=long CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) CHAOS_FAULTS=$(CHAOS_FAULTS) CHAOS_PROTOCOL=$(CHAOS_PROTOCOL) CHAOS_OUT=$(abspath $(CHAOS_OUT)) \
		$(GO) test -count=1 -v -timeout 3h -run TestChaos ./cmd/chaos/

## soak-short: the soak's GC mechanism on real processes: write until Badger has compacted, GC on then off (part of make test, about a minute)
soak-short:
	KVTX_SOAK=short $(GO) test -count=1 -v -timeout 15m -run '^TestSoakGCBoundsDiskAndNothingGrows$$' ./cmd/soak/

## soak: an update-heavy soak against real processes, SOAK_MINUTES per run (default 3) with GC on then off; disk bound, anonymous RSS under SOAK_ANON_LIMIT_MIB per node, flat RSS and goroutines; table, JSON and SVG chart in SOAK_OUT
SOAK_MINUTES        ?= 3
SOAK_ANON_LIMIT_MIB ?= 200
SOAK_OUT            ?= bin/soak-results
soak:
	KVTX_SOAK=long KVTX_SOAK_DURATION=$(SOAK_MINUTES)m KVTX_SOAK_ANON_LIMIT_MIB=$(SOAK_ANON_LIMIT_MIB) KVTX_SOAK_OUT=$(abspath $(SOAK_OUT)) \
		$(GO) test -count=1 -v -timeout 6h -run '^TestSoakGCBoundsDiskAndNothingGrows$$' ./cmd/soak/

## fuzz: run the frame decoder fuzzer (FUZZTIME: a count like 500000x; time-based -fuzztime can end with a spurious deadline error on Go 1.26)
FUZZTIME ?= 500000x
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzReadFrame -fuzztime $(FUZZTIME) ./wire/

clean:
	rm -rf $(BIN)

## bench: the standard benchmark suite, kvtx vs a local Badger store vs etcd, on a fresh cluster (about 3 minutes; needs Debian's etcd-server for the etcd column)
.PHONY: bench
bench: build
	BIN=$(BIN) bench/run-suite.sh
