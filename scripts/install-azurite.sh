#!/bin/sh
# install-azurite.sh — make Azurite, the official Azure Storage emulator
# (npm package "azurite"), available for the tests of the blob checkpoint
# store (internal/azurite starts it).
#
# It installs into the project-local folder .tools/azurite (git-ignored);
# nothing is installed globally. The program the tests run is
#
#     .tools/azurite/node_modules/.bin/azurite-blob
#
# Idempotent: does nothing when that exact version is already installed.
# Needs node (>= 18) and npm on PATH and the npm registry reachable; works
# as root and as an ordinary user. A failed install leaves the previous
# state untouched (it installs into a staging folder and renames it).
#
# Environment:
#   AZURITE_VERSION  the npm version to install (default below). 3.35.0 is
#                    the newest release that supports node 20; 3.36 and
#                    later require node >= 21/22.
#   AZURITE_DIR      install folder (default .tools/azurite in the repo).
set -eu
cd "$(dirname "$0")/.."

VERSION=${AZURITE_VERSION:-3.35.0}
DEST=${AZURITE_DIR:-.tools/azurite}
BIN="$DEST/node_modules/.bin/azurite-blob"
PKG="$DEST/node_modules/azurite/package.json"

installed_version() {
	[ -f "$PKG" ] || return 0
	node -e 'process.stdout.write(require(process.argv[1]).version)' "$(cd "$(dirname "$PKG")" && pwd)/package.json" 2>/dev/null || true
}

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "install-azurite.sh: $tool is not on PATH (install Debian's nodejs and npm packages)" >&2
		exit 1
	fi
done

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
	echo "install-azurite.sh: node $(node --version) is too old; Azurite needs node >= 18" >&2
	exit 1
fi

if [ -x "$BIN" ] && [ "$(installed_version)" = "$VERSION" ]; then
	echo "azurite $VERSION already installed: $BIN"
	exit 0
fi

echo "installing azurite $VERSION into $DEST"
mkdir -p "$(dirname "$DEST")"
STAGE="$DEST.staging.$$"
rm -rf "$STAGE"
cleanup() { rm -rf "$STAGE"; }
trap cleanup EXIT INT TERM
mkdir -p "$STAGE"
# A package.json of its own keeps npm from walking up into the repository
# (or a parent folder) and pins the version for a reproducible tree.
cat >"$STAGE/package.json" <<EOF
{
  "name": "isobroker-azurite",
  "private": true,
  "description": "Azurite for the isobroker tests; installed by scripts/install-azurite.sh",
  "dependencies": { "azurite": "$VERSION" }
}
EOF
(
	cd "$STAGE"
	npm install --no-audit --no-fund --omit=dev --loglevel=error
)
if [ ! -x "$STAGE/node_modules/.bin/azurite-blob" ]; then
	echo "install-azurite.sh: azurite-blob missing after npm install" >&2
	exit 1
fi
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT INT TERM
echo "azurite $VERSION installed: $BIN"
