# kvtx: the two commands a new user needs are `make run` and `make test`.
GO      ?= go
BIN     ?= bin
PKGS    := ./...
# Packages with concurrency run under the race detector.
RACE_PKGS := ./wire/... ./kv/... ./txn/...

.PHONY: all build run test unit e2e fuzz vet fmt-check clean

all: build

## build: put kvmaster, kvnode and kvctl in ./bin
build:
	$(GO) build -o $(BIN)/ ./cmd/kvmaster ./cmd/kvnode ./cmd/kvctl

## run: start a local master and two nodes on the built-in defaults (data under ./data); Ctrl-C stops all three
run: build
	@mkdir -p data
	@echo "kvtx: master on 127.0.0.1:9000, nodes on :9001 and :9002, metrics on :9100-9102. Ctrl-C stops all three."
	@trap 'kill -INT $$n1 $$n2 $$m 2>/dev/null; wait' INT TERM; \
	$(BIN)/kvnode node1 & n1=$$!; \
	$(BIN)/kvnode node2 & n2=$$!; \
	$(BIN)/kvmaster & m=$$!; \
	wait

## test: formatting, vet, unit tests (race detector on the concurrent packages), fuzz seeds, end-to-end tests
test: fmt-check vet unit e2e

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags crashpoints $(PKGS)

unit:
	$(GO) test -race -count=1 $(RACE_PKGS)

e2e:
	$(GO) test -count=1 -timeout 15m ./cmd/...

## fuzz: run the frame decoder fuzzer (FUZZTIME: a count like 500000x; time-based -fuzztime can end with a spurious deadline error on Go 1.26)
FUZZTIME ?= 500000x
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzReadFrame -fuzztime $(FUZZTIME) ./wire/

clean:
	rm -rf $(BIN)
