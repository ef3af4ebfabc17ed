# isobroker — developer commands. `make test` is what CI runs.
GO          ?= go
GOBIN       := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN),)
GOBIN       := $(shell $(GO) env GOPATH)/bin
endif
STATICCHECK := $(GOBIN)/staticcheck
# The race detector on a 2-core machine: keep the whole run inside CI's budget.
TEST_FLAGS  ?= -race -count=1 -timeout 25m

.PHONY: test test-short test-long stress lint deps bench bench-smoke bench-go fmt

## test: install what the tests need, lint, then run every test under -race,
## and the benchmark runner in its smoke mode (bench-smoke) so it cannot rot.
test: deps lint
	$(GO) test $(TEST_FLAGS) ./...
	$(MAKE) bench-smoke

## test-short: a contributor's first loop, in well under a minute: every
## test of the main module that needs no server, under go test -short. Tests
## that need RabbitMQ, Azurite or node.js skip there, saying so, and so do
## the few emulator tests that take several seconds each (internal/testenv);
## the in-process emulator's tests run. It installs and lints nothing; make
## test is still what CI runs, with no -short and nothing skipped. 30-50 s
## on 2 cores; TEST_SHORT_FLAGS=-race adds the race detector (~80 s).
TEST_SHORT_FLAGS ?=
test-short:
	$(GO) test -short -count=1 -timeout 5m $(TEST_SHORT_FLAGS) ./...

## test-long: the same with the long variants of the external suites.
test-long: deps lint
	ISOBROKER_LONG=1 $(GO) test $(TEST_FLAGS) -timeout 60m ./...

## stress: every package's tests under -race -count=5, one package at a
## time (a flaky test is a defect: run it before resolving an issue).
## STRESS_PKGS narrows it, e.g. make stress STRESS_PKGS="./rabbit ./registry".
STRESS_PKGS ?= ./...
stress: deps
	@set -e; for p in $$($(GO) list $(STRESS_PKGS)); do \
	  echo "== $$p"; $(GO) test -race -count=5 -timeout 60m $$p; done

## lint: gofmt, go vet and staticcheck must all be clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

## deps: tools and servers the tests use (staticcheck, rabbitmq-server).
deps:
	sh scripts/install-deps.sh

## bench: the comparative report: starts its own RabbitMQ node and Event Hubs
## emulator, runs every contender interleaved, writes docs/BENCHMARKS.md and
## docs/bench/*.svg (nested module bench/, so the peers stay out of go.mod).
## About 10 minutes on 2 cores (installs rabbitmq-server if missing).
## BENCH_FLAGS: e.g. -rounds 3; -scenarios 1,3 for a partial run while
## working on the runner (not a report to commit).
BENCH_FLAGS ?=
bench:
	sh scripts/install-rabbitmq.sh
	cd bench && $(GO) run ./cmd/benchreport -out ../docs $(BENCH_FLAGS)

## bench-smoke: the runner in its smoke mode (about 20 s), plus bench/'s lint,
## so that the report cannot rot. Needs rabbitmq-server: without it the smoke
## test fails in CI (CI set) and is skipped, loudly, elsewhere.
bench-smoke:
	@out=$$(cd bench && gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	cd bench && $(GO) vet ./... && $(STATICCHECK) ./...
	cd bench && $(GO) test -count=1 -timeout 5m -run TestSmoke ./...

## bench-go: Go benchmarks of every package of the main module.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	gofmt -w $$(git ls-files '*.go')
