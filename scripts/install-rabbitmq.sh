#!/bin/sh
# install-rabbitmq.sh — make Debian's rabbitmq-server available for the tests.
#
# Idempotent: does nothing when /usr/lib/rabbitmq/bin/rabbitmq-server is
# already there. Otherwise installs the package with apt-get (needs root).
#
# The tests never use the package's own service: internal/rabbitnode starts
# throw-away nodes on free loopback ports in temp dirs. So the install keeps
# the Debian service from starting (a temporary policy-rc.d denies it), and
# afterwards makes sure no default node or epmd of the package is left
# running.
set -eu

SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

if [ -x "$SERVER" ]; then
	echo "rabbitmq-server already installed: $SERVER"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-rabbitmq.sh: need root to install rabbitmq-server (run it with sudo)" >&2
	exit 1
fi

# Deny service starts during the install, unless the machine already has a
# policy of its own (then respect it and stop the service afterwards).
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$POLICY"
	chmod 755 "$POLICY"
	OWN_POLICY=1
fi
cleanup() {
	if [ -n "$OWN_POLICY" ]; then
		rm -f "$POLICY"
	fi
}
trap cleanup EXIT INT TERM

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server

# Make sure the package's default node is not running and will not be needed.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl stop rabbitmq-server >/dev/null 2>&1 || true
	systemctl disable rabbitmq-server >/dev/null 2>&1 || true
elif [ -x /etc/init.d/rabbitmq-server ]; then
	/etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
fi
# The default node's epmd (port 4369) may outlive it.
if command -v epmd >/dev/null 2>&1; then
	epmd -kill >/dev/null 2>&1 || true
fi

if [ ! -x "$SERVER" ]; then
	echo "install-rabbitmq.sh: $SERVER missing after install" >&2
	exit 1
fi
echo "rabbitmq-server installed: $SERVER"
