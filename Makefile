# Sluice. `make dev` runs everything locally; `make test` runs every test
# that fits in CI (unit, integration and end-to-end with real PostgreSQL,
# NATS and clients).
GO      ?= go
BIN     := bin/sluice
PKGS    := ./...

.PHONY: all build dev test test-short check proto proto-check fmt vet lint bench fuzz soak clean

all: build

build:
	$(GO) build -o $(BIN) ./services/sluice/cmd/sluice

dev: build
	./$(BIN) dev

# Everything CI runs. End-to-end tests use bin/sluice, psql, pgbench and a
# real PostgreSQL; they refuse to skip silently (SLUICE_E2E_REQUIRED=1).
test: build proto-check
	$(GO) vet $(PKGS)
	SLUICE_E2E_REQUIRED=1 SLUICE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m $(PKGS)

test-short: build
	$(GO) test -short -count=1 $(PKGS)

# What to run before committing: formatting, vet, staticcheck, race tests.
check: build proto-check
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo "gofmt needed"; exit 1)
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	SLUICE_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 30m $(PKGS)

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
