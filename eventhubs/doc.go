// Package eventhubs is the Azure Event Hubs adapter of isobroker, built
// directly on github.com/Azure/go-amqp (it does not use the Azure SDK).
//
// Open a Broker from a Config, from a connection string or eventhubs://
// URL with options, or (for a registry) with Opener — the front door every
// adapter has:
//
//	b, err := eventhubs.OpenURL(ctx, eventhubs.Config{Namespace: "ns.servicebus.windows.net", KeyName: "send", Key: key})
//	b, err := eventhubs.OpenURL(ctx, "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=…", eventhubs.WithName("orders"))
//	reg.Register("eventhubs", eventhubs.Opener)
//
// The settings every adapter shares have the same names here as in the
// others' Configs and options: Name, Logger, TLSConfig, DialTimeout,
// Backoff (a broker.Backoff, the waits between retries) and
// MaxMessageSize, set by WithName, WithLogger, WithTLSConfig,
// WithDialTimeout, WithBackoff and WithMaxMessageSize.
//
// Vocabulary: a topic is an event hub; Message.Key is the partition key;
// the PartitionIDHeader header sends to one partition; broker.Group is the
// consumer group (default "$Default"); broker.StartAt picks the start
// position; broker.Prefetch is each receiver's link credit (without it,
// sized to the round trip: PrefetchRate); OwnerLevel, Partitions,
// OnOwnershipLost, Balanced and the deprecated MaxHandlerRetries are
// driver options (broker.WithDriverOption).
// HubProperties and PartitionProperties read $management.
//
// Poison events: the portable options are honoured (Capabilities
// DeadLetter and RedeliveryDelay). A partition is an ordered log without
// per-event settlement, so an event whose handler fails or panics is
// retried in place: its partition waits — the others go on — for
// broker.RedeliveryDelay (or RedeliveryBackoff's steps; without either,
// 20 ms doubling up to 1 s) before each new delivery. After
// broker.MaxDeliveries deliveries (default broker.DefaultMaxDeliveries,
// 20: about 14 s with the default waits) the event is published to the
// dead-letter topic — another event hub of the same namespace,
// broker.DeadLetterTopic(topic) ("<hub>.dead-letter") unless
// broker.DeadLetterTo names one — through the same Broker's connection,
// with the headers broker.HeaderOriginalTopic, HeaderOriginalGroup,
// HeaderDeliveryCount and HeaderLastError, and the partition moves on
// (and checkpoints) past it. Create the dead-letter hub, with a consumer
// group named broker.DeadLetterGroup ("kept") for its readers, before
// subscribing: consumer groups are a management-plane resource that this
// adapter never creates. Until the dead-letter publish succeeds the
// partition stalls (logged at error level, retried every Backoff.Max);
// nothing is skipped. See Subscribe.
//
// Ownership: every Broker owns one AMQP connection at a time (with its
// $cbs and $management request links, one session per event link, the
// token renewals and the goroutines that serve them). Nothing is shared
// between Brokers, and nothing is package-level state.
//
// Contexts: a caller's ctx bounds that caller's wait, never shared state.
// The connection, its sessions, links and $cbs/$management request links
// are built, written to and torn down under the Broker's own lifetime (one
// attempt at a time, each bounded by 30 s; a connection attempt by
// Config.DialTimeout, 30 s by default); every caller waits for them by
// its own ctx, so a caller with a short deadline fails alone and leaves
// nothing half built or half sent — the next call works. A Publish cut
// short stops writing batches it has not started, and the transfer on the
// wire completes.
//
// Networks: the connection is TLS to the namespace's host on port 5671
// (Config.TLSConfig adjusts it: roots, client certificates; the server
// name sent and verified is the namespace's host), or plain TCP to port
// 5672 with UseDevelopmentEmulator. Config.CustomEndpoint dials another
// host[:port] — a proxy, a gateway, a private endpoint — while the AMQP
// hostname, the TLS server name and the token audiences stay the
// namespace's. Config.WebSockets carries AMQP over a WebSocket
// (wss://<namespace>/$servicebus/websocket, subprotocol AMQPWSB10, port
// 443) for networks that open only HTTPS; HTTP proxies from the
// environment are not used. Config.Dialer replaces the TCP dial under all
// of these (to tunnel through a SOCKS or HTTP CONNECT proxy). A
// certificate that is not trusted or names another host, and a WebSocket
// upgrade the endpoint refuses with a client error, fail at once and are
// not retried.
//
// Authentication: the connection uses SASL ANONYMOUS; before every link
// attach the adapter puts a token on $cbs for the link's audience — a
// shared access signature it signs from the key (renewed half way
// through Config.TokenTTL, or five minutes before expiry for a TTL over
// ten minutes), a fixed SharedAccessSignature (sent as is, never
// renewed), or an Azure AD token from a TokenCredential (renewed five
// minutes before it expires). Keys, signatures and tokens never appear in
// logs, errors or String output.
//
// Recovery follows the service's intent. The service closes idle
// connections with amqp:connection:forced: that is logged at info level
// and the connection, its claims, sessions and links are rebuilt on the
// next operation (Config.Reconnect = ReconnectEager rebuilds at once;
// Config.KeepAlive avoids idle closes). A detached link
// (amqp:link:detach-forced) is re-attached, and so is a link the service
// detached with amqp:unauthorized-access after it was attached (its token
// lapsed: a fresh token is put first); the peer's protocol complaints
// (amqp:not-allowed, framing, session errors) retire the link, session or
// connection and are retried; com.microsoft:server-busy and
// com.microsoft:timeout are retried with Config.Backoff's exponential
// backoff and jitter (never above Backoff.Max);
// a refused token, not-found and message-size errors, and TLS certificate
// or host name failures are fatal and returned at once; amqp:link:stolen ends that partition's receiver with an error
// wrapping broker.ErrOwnershipLost, never retried. Every lifecycle step
// (dial, open, put-token, session, attach, close with its condition,
// reconnect) is logged through log/slog with its duration.
//
// Load balancing: with the Balanced driver option a subscription is one
// member of its consumer group that shares the hub's partitions with the
// other members through a checkpoint.Store (in memory, or Azure Blob
// Storage in the layout of the Azure SDK's blob checkpoint store, so that
// members and the SDK's Processor can share one container). Members claim
// partitions with optimistic concurrency, converge on an even spread, take
// partitions over with epoch receivers, checkpoint what their handlers
// acknowledged, and relinquish their partitions when they close.
// BalancedSubscription.Owned reports the partitions a member holds.
//
// Errors wrap the broker sentinels and *Error, which carries the AMQP
// condition; broker.IsRetryable classifies them.
//
// Telemetry (WithTelemetry, Config.Telemetry; see broker.Telemetry): send
// and process spans with messaging.system "eventhubs", server.address and
// server.port of the address dialled, the partition id and
// messaging.eventhubs.message.enqueued_time; the trace context travels in
// the application properties traceparent, tracestate and Diagnostic-Id
// (written equal to traceparent and read when it is absent, as the Azure
// SDKs do). Settle spans: checkpoint (the event is done and the
// checkpoint may pass it) and dead_letter, whose publish is a child of the
// process span; a failed call retried in place ends its process span with
// the handler's error.
package eventhubs
