#!/bin/sh
# install-deps.sh — everything `make test` needs on a fresh Debian machine
# beyond Go itself: the tools the Makefile calls and the real servers the
# tests start. Idempotent; installs only what is missing.
set -eu
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
if [ ! -x "$gobin/staticcheck" ]; then
	echo "installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

sh scripts/install-rabbitmq.sh
sh scripts/install-azurite.sh
sh scripts/install-jssdk.sh
