#!/bin/sh
# install-jssdk.sh — make the official JavaScript Event Hubs SDK (npm
# package "@azure/event-hubs", pinned) available for the emulator's JS SDK
# conformance suite (eventhubs/emulator/jsinterop runs node against the
# emulator binary).
#
# The versions are those of eventhubs/emulator/jsinterop/package.json and
# its committed package-lock.json, installed with `npm ci` into the
# project-local folder .tools/jssdk (git-ignored); nothing is installed
# globally. The suite loads
#
#     .tools/jssdk/node_modules/@azure/event-hubs
#
# Idempotent: does nothing when the installed tree was made from the same
# package.json and package-lock.json. Needs node (>= 20) and npm on PATH and
# the npm registry reachable; works as root and as an ordinary user. A
# failed install leaves the previous state untouched (it installs into a
# staging folder and renames it).
#
# Environment:
#   JSSDK_DIR  install folder (default .tools/jssdk in the repo).
set -eu
cd "$(dirname "$0")/.."

SRC=eventhubs/emulator/jsinterop
DEST=${JSSDK_DIR:-.tools/jssdk}
PKG="$DEST/node_modules/@azure/event-hubs/package.json"

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "install-jssdk.sh: $tool is not on PATH (install Debian's nodejs and npm packages)" >&2
		exit 1
	fi
done

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
	echo "install-jssdk.sh: node $(node --version) is too old; @azure/event-hubs 6 needs node >= 20" >&2
	exit 1
fi

for f in package.json package-lock.json; do
	if [ ! -f "$SRC/$f" ]; then
		echo "install-jssdk.sh: $SRC/$f is missing" >&2
		exit 1
	fi
done
# node's require needs an absolute path; DEST may be relative or absolute.
pkgfield() { node -p 'require(require("path").resolve(process.argv[1]))'"$2" "$1"; }
VERSION=$(pkgfield "$SRC/package.json" '.dependencies["@azure/event-hubs"]')

if [ -f "$PKG" ] && cmp -s "$SRC/package.json" "$DEST/package.json" &&
	cmp -s "$SRC/package-lock.json" "$DEST/package-lock.json"; then
	echo "@azure/event-hubs $VERSION already installed: $DEST"
	exit 0
fi

echo "installing @azure/event-hubs $VERSION into $DEST"
mkdir -p "$(dirname "$DEST")"
STAGE="$DEST.staging.$$"
rm -rf "$STAGE"
cleanup() { rm -rf "$STAGE"; }
trap cleanup EXIT INT TERM
mkdir -p "$STAGE"
# The committed package.json and lock pin the whole tree; npm ci installs
# exactly it (and fails if the two disagree) and keeps npm from walking up
# into the repository.
cp "$SRC/package.json" "$SRC/package-lock.json" "$STAGE/"
(
	cd "$STAGE"
	npm ci --no-audit --no-fund --omit=dev --loglevel=error
)
got=$(pkgfield "$STAGE/node_modules/@azure/event-hubs/package.json" .version 2>/dev/null || true)
if [ "$got" != "$VERSION" ]; then
	echo "install-jssdk.sh: @azure/event-hubs ${got:-missing} after npm ci, want $VERSION" >&2
	exit 1
fi
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT INT TERM
echo "@azure/event-hubs $VERSION installed: $DEST"
