// Package jsinterop holds the emulator's JavaScript SDK conformance suite:
// Go tests that build and start the eventhubs-emulator binary and run the
// official JavaScript Event Hubs SDK (@azure/event-hubs, pinned in
// package.json and package-lock.json beside this file) against it under
// node, through conformance.mjs.
//
// The SDK is installed by scripts/install-jssdk.sh into .tools/jssdk (or
// the folder $ISOBROKER_JSSDK_DIR names). Without node or the SDK the tests
// fail in CI (environment variable CI set) and are skipped, saying so,
// elsewhere.
//
// The package has no API; it exists for its tests.
package jsinterop
