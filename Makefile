# Sluice. `make dev` runs everything locally; `make test` runs every test
# that fits in CI (unit, integration and end-to-end with real PostgreSQL,
# NATS and clients).
GO      ?= go
BIN     := bin/sluice
PKGS    := ./...

.PHONY: all build dev test test-short preflight tools lint check proto proto-check fmt bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./services/sluice/cmd/sluice

dev: build
	./$(BIN) dev $(ARGS)

# Everything CI runs: the preflight (names what this machine lacks), the
# staleness check of generated code, formatting, vet, staticcheck, go.mod
# tidiness, every test, and the race detector on every package but the
# end-to-end and deployment ones (which run the built binary). End-to-end tests use
# bin/sluice, psql, pgbench and a real PostgreSQL; they refuse to skip
# silently (SLUICE_E2E_REQUIRED=1).
RACE_PKGS = $$($(GO) list ./... | grep -v -e /e2e -e /scripts/ -e /deploy$$)
test: preflight tools build proto-check lint
	SLUICE_E2E_REQUIRED=1 SLUICE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m $(PKGS)
	SLUICE_E2E_REQUIRED=1 $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)

test-short: build
	$(GO) test -short -count=1 $(PKGS)

preflight:
	@scripts/preflight.sh test

# Third-party programs the tests run (ORY Hydra), built from the Go module
# proxy into ~/.cache/sluice once per machine.
tools:
	@scripts/tools.sh >/dev/null

# Formatting, vet, staticcheck and go.mod tidiness.
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo "gofmt needed: make fmt"; exit 1)
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: go mod tidy"; exit 1)

# What to run before committing: the same as CI.
check: test

proto:
	scripts/proto.sh

proto-check:
	scripts/proto.sh --check

fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

# Fuzz every parser for FUZZTIME each (default 1m).
FUZZTIME ?= 1m
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

bench: build
	scripts/bench.sh

clean:
	rm -rf bin .tools
