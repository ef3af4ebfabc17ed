// Package driver is the toolkit adapters build on; the portable package
// broker is the users' API. Like database/sql/driver, nothing here is
// needed to publish or subscribe: it holds the argument checks every
// adapter runs before sending anything (CheckPublish, CheckSubscribe,
// NewSubscribeConfig, PrefetchOr), the state tracker behind
// Broker.State and WatchState (StateTracker), and the marks that decide
// broker.IsRetryable (MarkRetryable, MarkFatal). An adapter passes
// brokertest.Run to show it keeps the contract.
package driver
