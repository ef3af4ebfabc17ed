// Package driver is the toolkit adapters build on; the portable package
// broker is the users' API. Like database/sql/driver, nothing here is
// needed to publish or subscribe: it holds the argument checks every
// adapter runs before sending anything (CheckPublish, CheckSubscribe,
// NewSubscribeConfig, PrefetchOr), the state tracker behind
// Broker.State and WatchState (StateTracker), the marks that decide
// broker.IsRetryable (MarkRetryable, MarkFatal), the one backoff every
// adapter applies (ResolveBackoff, BackoffDelay), OpenConfig, the
// settings a registry hands to an adapter's Opener; and the lifecycle the
// contract asks of every adapter, written once: Gate admits calls,
// tracks subscriptions and carries out the shared middle of Close;
// Subscription, embedded in each adapter's subscription, stops once,
// reports Done and Err, runs handlers under their context and turns
// panics into errors; Instruments, the OpenTelemetry spans, metrics and
// trace-context propagation broker.Telemetry turns on (send around the
// adapter's Publish, process around Subscription.Call, settle recorded by
// the adapter through the Processing that Call returns, state changes
// through Instruments.Track). What differs per broker (connections, settlement,
// recovery) stays in the adapter. An adapter passes brokertest.Run to
// show it keeps the contract.
package driver
