# isobroker — developer commands. `make test` is what CI runs.
GO          ?= go
GOBIN       := $(shell $(GO) env GOBIN)
ifeq ($(GOBIN),)
GOBIN       := $(shell $(GO) env GOPATH)/bin
endif
STATICCHECK := $(GOBIN)/staticcheck
# The race detector on a 2-core machine: keep the whole run inside CI's budget.
TEST_FLAGS  ?= -race -count=1 -timeout 25m

.PHONY: test test-long lint deps bench fmt

## test: install what the tests need, lint, then run every test under -race.
test: deps lint
	$(GO) test $(TEST_FLAGS) ./...

## test-long: the same with the long variants of the external suites.
test-long: deps lint
	ISOBROKER_LONG=1 $(GO) test $(TEST_FLAGS) -timeout 60m ./...

## lint: gofmt, go vet and staticcheck must all be clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

## deps: tools and servers the tests use (staticcheck, rabbitmq-server).
deps:
	sh scripts/install-deps.sh

## bench: Go benchmarks of every package (the comparative report lives in bench/).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	gofmt -w $$(git ls-files '*.go')
