package eventhubs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/redact"
)

// Defaults of Config fields.
const (
	// DefaultConsumerGroup is the consumer group of a Subscribe without
	// broker.Group.
	DefaultConsumerGroup = "$Default"
	// DefaultPrefetch is the least link credit of a partition receiver
	// when Subscribe has no broker.Prefetch (PrefetchRate sizes it to the
	// round trip): the Azure SDK's default, which keeps a partition
	// streaming without a round trip per event.
	DefaultPrefetch = 300
	// PrefetchRate is the event rate, per partition receiver, that the
	// default credit keeps up across one round trip to the service: a
	// receiver has at most its credit in flight, so it reads at most
	// credit ÷ round trip events a second. Without broker.Prefetch a
	// receiver's credit is max(DefaultPrefetch, PrefetchRate × the round
	// trip of its session's begin), at most MaxAutoPrefetch: 300 up to a
	// 15 ms round trip, 400 at 20 ms, 1000 from 50 ms. The same rule as
	// the rabbit adapter's default prefetch.
	PrefetchRate = 20000
	// MaxAutoPrefetch caps the credit chosen from the round trip (not an
	// explicit broker.Prefetch): every credit is an event a partition's
	// receiver may hold in memory.
	MaxAutoPrefetch = 1000
	// DefaultMaxMessageSize is the link max-message-size assumed before the
	// first sender link reports the real one (the Standard tier's 1 MiB).
	DefaultMaxMessageSize = 1 << 20
	// DefaultTokenTTL is the lifetime of generated shared access signatures.
	DefaultTokenTTL = time.Hour
	// DefaultRetryAttempts is how many times a retryable failure of one
	// operation is retried before the error is returned.
	DefaultRetryAttempts = 5
	// DefaultBackoffInitial is Config.Backoff's default first step.
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax is Config.Backoff's default cap.
	DefaultBackoffMax = 10 * time.Second
	// DefaultRetryBaseDelay is DefaultBackoffInitial.
	//
	// Deprecated: use DefaultBackoffInitial.
	DefaultRetryBaseDelay = DefaultBackoffInitial
	// DefaultRetryMaxDelay is DefaultBackoffMax.
	//
	// Deprecated: use DefaultBackoffMax.
	DefaultRetryMaxDelay = DefaultBackoffMax
	// DefaultDialTimeout bounds one connection attempt (Config.DialTimeout):
	// the bound every other attempt at building shared state has.
	DefaultDialTimeout = setupTimeout
	// TokenScope is the Azure AD scope of tokens for Event Hubs.
	TokenScope = "https://eventhubs.azure.net//.default"

	emulatorPort = "5672"
	tlsPort      = "5671"
	wsPort       = "80"
	wssPort      = "443"
)

// ReconnectMode says when a connection the service closed is rebuilt.
type ReconnectMode int

const (
	// ReconnectLazy (the default) rebuilds connection → CBS → session →
	// link on the next operation that needs them. Active subscriptions need
	// them at once, so they reconnect at once.
	ReconnectLazy ReconnectMode = iota
	// ReconnectEager rebuilds the connection as soon as it is lost, with
	// backoff, even when nothing uses it.
	ReconnectEager
)

// String names the mode.
func (m ReconnectMode) String() string {
	switch m {
	case ReconnectLazy:
		return "lazy"
	case ReconnectEager:
		return "eager"
	}
	return fmt.Sprintf("ReconnectMode(%d)", int(m))
}

// AccessToken is an Azure AD token and its expiry.
type AccessToken struct {
	// Token is the bearer token (a JWT). It is a secret: the adapter never
	// logs it or puts it in an error.
	Token string
	// ExpiresOn is when the token stops being valid.
	ExpiresOn time.Time
}

// TokenCredential supplies Azure AD tokens, so that azidentity (or any
// other source) plugs in without this package importing it. GetToken is
// called with scope TokenScope before each link attach and again before
// the token expires; it must obey ctx. An adapter for an azcore credential
// is three lines:
//
//	type aad struct{ c azcore.TokenCredential }
//	func (a aad) GetToken(ctx context.Context, scope string) (eventhubs.AccessToken, error) {
//		t, err := a.c.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
//		return eventhubs.AccessToken{Token: t.Token, ExpiresOn: t.ExpiresOn}, err
//	}
type TokenCredential interface {
	GetToken(ctx context.Context, scope string) (AccessToken, error)
}

// RetryOptions bounds the recovery of one operation (a Publish, a
// subscription's attach, a management read) from retryable failures; the
// waits between the tries are Config.Backoff's.
type RetryOptions struct {
	// MaxAttempts is how many retries follow the first try (default
	// DefaultRetryAttempts; negative: none). Subscriptions retry without
	// limit; this bounds Publish and management reads.
	MaxAttempts int
	// BaseDelay is the former Config.Backoff.Initial, used (with MaxDelay)
	// when Config.Backoff is zero.
	//
	// Deprecated: use Config.Backoff.
	BaseDelay time.Duration
	// MaxDelay is the former Config.Backoff.Max, used (with BaseDelay)
	// when Config.Backoff is zero.
	//
	// Deprecated: use Config.Backoff.
	MaxDelay time.Duration
}

// Config configures a Broker. Build it by hand or from a connection string
// with ParseConnectionString; Open validates it. Name, Logger, TLSConfig,
// DialTimeout, Backoff and MaxMessageSize mean the same in every adapter's
// Config (and have the same With… options). Open refuses a negative
// duration or size, and a Backoff.Max below Backoff.Initial, with an error
// wrapping broker.ErrInvalidOption that names the field, before anything
// is dialled.
type Config struct {
	// Namespace is the host of the Event Hubs namespace, with an optional
	// port ("myns.servicebus.windows.net", "127.0.0.1:5672"). Required.
	Namespace string
	// EventHub is the default event hub (a connection string's
	// EntityPath). Optional: topics name hubs. When set, Open checks the
	// credentials against it.
	EventHub string
	// KeyName and Key are a shared access key. The key is a secret.
	KeyName string
	Key     string
	// SharedAccessSignature is a ready SAS token ("SharedAccessSignature
	// sr=…"), sent as is and never refreshed. It is a secret.
	SharedAccessSignature string
	// Credential supplies Azure AD tokens instead of a key or SAS.
	Credential TokenCredential
	// UseDevelopmentEmulator connects with plain TCP (amqp://, default port
	// 5672) instead of TLS (amqps://, default port 5671); with WebSockets,
	// ws:// (default port 80) instead of wss:// (443). Token audiences then
	// start with amqp:// instead of amqps://.
	UseDevelopmentEmulator bool
	// TLSConfig overrides the TLS settings (ignored with
	// UseDevelopmentEmulator); nil is TLS 1.2 or later with the system's
	// roots. Its ServerName, when empty, is the Namespace's host — also
	// with CustomEndpoint — and is both sent as SNI and verified against
	// the certificate. A certificate that is not trusted or names another
	// host fails Open (or the reconnect) at once, not retryable.
	TLSConfig *tls.Config
	// CustomEndpoint is the address to dial instead of the Namespace
	// (host[:port], the port defaulting as for Namespace): a TCP proxy, an
	// application gateway, a private endpoint's IP address. Only the TCP
	// destination changes: the AMQP open frame's hostname, the TLS server
	// name (SNI and verification), the WebSocket URL and its Host header,
	// and the token audiences all stay the Namespace's, as with
	// azeventhubs' ClientOptions.CustomEndpoint. Connection strings have no
	// key for it (none of the Azure SDKs reads one); set it here, with
	// WithCustomEndpoint, or with the URL form's custom_endpoint parameter.
	CustomEndpoint string
	// WebSockets carries AMQP over a WebSocket instead of a bare TCP
	// connection, for networks that open only HTTPS: an HTTP/1.1 upgrade
	// at wss://<Namespace>/$servicebus/websocket (default port 443; ws://
	// and port 80 with UseDevelopmentEmulator) with the subprotocol
	// AMQPWSB10, whose binary messages then carry the AMQP bytes.
	// TLSConfig, CustomEndpoint and Dialer apply as over TCP; HTTP proxies
	// configured in the environment are not used (a Dialer can tunnel).
	// An upgrade refused with an HTTP 4xx status other than 408 and 429 is
	// fatal, any other failure retryable.
	WebSockets bool
	// Dialer, when set, opens the TCP connections (to CustomEndpoint or
	// Namespace, with the port) in place of a net.Dialer; TLS and
	// WebSockets run over what it returns. A *net.Dialer fits, and so does
	// a SOCKS or HTTP CONNECT proxy dialer. It must obey ctx.
	Dialer ContextDialer
	// DialTimeout bounds each connection attempt — TCP, TLS, the WebSocket
	// upgrade and the AMQP open — at Open and at every reconnect (default
	// DefaultDialTimeout). The attempt runs under the instance's lifetime:
	// a caller's ctx ends only that caller's wait, never the attempt.
	DialTimeout time.Duration

	// Name names the instance in logs.
	Name string
	// Logger receives lifecycle logs (default slog.Default()).
	Logger *slog.Logger
	// MaxMessageSize is the link max-message-size assumed until a sender
	// link reports the real one (default DefaultMaxMessageSize).
	MaxMessageSize int
	// Telemetry turns on OpenTelemetry traces, metrics and trace-context
	// propagation (see broker.Telemetry and the package doc); the zero
	// value turns them off.
	Telemetry broker.Telemetry
	// TokenTTL is the lifetime of generated SAS tokens (default
	// DefaultTokenTTL); they are renewed half way through
	// it, or five minutes before expiry when it is longer than ten minutes.
	TokenTTL time.Duration
	// KeepAlive, when positive, reads the hub's properties over
	// $management whenever the connection has been quiet this long, so
	// that the service does not close it as idle. Off by default: idle
	// closes are normal and recovered.
	KeepAlive time.Duration
	// Reconnect says when a lost connection is rebuilt (default lazy).
	Reconnect ReconnectMode
	// Backoff shapes the waits between retries — of a Publish or a
	// management read, of a partition receiver's attach, of an eager
	// reconnect — as broker.Backoff says (defaults DefaultBackoffInitial
	// and DefaultBackoffMax).
	Backoff broker.Backoff
	// Retry bounds retries of retryable failures.
	Retry RetryOptions
}

// ContextDialer dials network connections; *net.Dialer implements it.
type ContextDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Option adjusts the Config OpenURL builds from its target. Options apply
// in order, a later one overriding an earlier one; a nil Option is
// skipped.
type Option func(*Config)

// WithName names the instance in logs.
func WithName(name string) Option { return func(c *Config) { c.Name = name } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Config) { c.Logger = l } }

// WithCredential authenticates with Azure AD tokens from cred instead of
// the connection string's key or SAS.
func WithCredential(cred TokenCredential) Option {
	return func(c *Config) { c.Credential = cred }
}

// WithKeepAlive sets Config.KeepAlive.
func WithKeepAlive(d time.Duration) Option { return func(c *Config) { c.KeepAlive = d } }

// WithReconnect sets Config.Reconnect.
func WithReconnect(m ReconnectMode) Option { return func(c *Config) { c.Reconnect = m } }

// WithDialTimeout sets Config.DialTimeout.
func WithDialTimeout(d time.Duration) Option { return func(c *Config) { c.DialTimeout = d } }

// WithBackoff sets Config.Backoff.
func WithBackoff(b broker.Backoff) Option { return func(c *Config) { c.Backoff = b } }

// WithRetry sets Config.Retry.
func WithRetry(r RetryOptions) Option { return func(c *Config) { c.Retry = r } }

// WithTokenTTL sets Config.TokenTTL.
func WithTokenTTL(d time.Duration) Option { return func(c *Config) { c.TokenTTL = d } }

// WithTLSConfig sets Config.TLSConfig.
func WithTLSConfig(t *tls.Config) Option { return func(c *Config) { c.TLSConfig = t } }

// WithTelemetry sets Config.Telemetry.
func WithTelemetry(t broker.Telemetry) Option { return func(c *Config) { c.Telemetry = t } }

// WithCustomEndpoint sets Config.CustomEndpoint: dial hostPort instead of
// the namespace, which stays the name in the protocol, TLS and tokens.
func WithCustomEndpoint(hostPort string) Option {
	return func(c *Config) { c.CustomEndpoint = hostPort }
}

// WithWebSockets sets Config.WebSockets: AMQP over WebSockets.
func WithWebSockets() Option { return func(c *Config) { c.WebSockets = true } }

// WithDialer sets Config.Dialer.
func WithDialer(d ContextDialer) Option { return func(c *Config) { c.Dialer = d } }

// WithMaxMessageSize sets Config.MaxMessageSize.
func WithMaxMessageSize(n int) Option { return func(c *Config) { c.MaxMessageSize = n } }

// String describes the configuration with every secret masked.
func (c Config) String() string {
	auth := "none"
	switch {
	case c.Credential != nil:
		auth = "aad"
	case c.SharedAccessSignature != "":
		auth = "sas=" + redact.Mask
	case c.Key != "" || c.KeyName != "":
		auth = "key=" + c.KeyName + ":" + redact.Mask
	}
	var route string
	if c.CustomEndpoint != "" {
		route += " endpoint=" + c.CustomEndpoint
	}
	if c.WebSockets {
		route += " websockets=true"
	}
	return fmt.Sprintf("eventhubs{namespace=%s%s hub=%s auth=%s emulator=%t name=%s}",
		c.Namespace, route, c.EventHub, auth, c.UseDevelopmentEmulator, c.Name)
}

// GoString is String, so that %#v hides the secrets too.
func (c Config) GoString() string { return c.String() }

// LogValue makes slog print the redacted String.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// ParseConnectionString parses an Event Hubs connection string
// ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=…;
// SharedAccessKey=…;EntityPath=hub"). Key names are case-insensitive;
// recognised keys are Endpoint, SharedAccessKeyName, SharedAccessKey,
// SharedAccessSignature, EntityPath and UseDevelopmentEmulator — the keys
// of the service's and the Azure SDKs' connection strings; others are
// ignored. A custom endpoint and WebSockets are client options there, not
// connection-string keys (WithCustomEndpoint, WithWebSockets). Errors wrap
// broker.ErrInvalidOption, name the missing or bad key and never contain a
// secret.
func ParseConnectionString(s string) (Config, error) {
	var c Config
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("eventhubs: connection string: %w: %s", broker.ErrInvalidOption, fmt.Sprintf(format, args...))
	}
	var endpoint string
	haveEndpoint := false
	for i, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return bad("segment %d has no '=' (want Key=Value)", i+1)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "endpoint":
			endpoint, haveEndpoint = v, true
		case "sharedaccesskeyname":
			c.KeyName = v
		case "sharedaccesskey":
			c.Key = v
		case "sharedaccesssignature":
			c.SharedAccessSignature = v
		case "entitypath":
			c.EventHub = v
		case "usedevelopmentemulator":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("UseDevelopmentEmulator=%q is not a boolean", v)
			}
			c.UseDevelopmentEmulator = b
		}
	}
	if !haveEndpoint || endpoint == "" {
		return bad("missing Endpoint (want Endpoint=sb://<namespace>/)")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return bad("Endpoint %q is not a URL of the form sb://<namespace>/", redact.Target(endpoint))
	}
	c.Namespace = u.Host
	if c.SharedAccessSignature == "" {
		if c.KeyName == "" {
			return bad("missing SharedAccessKeyName (or a SharedAccessSignature)")
		}
		if c.Key == "" {
			return bad("missing SharedAccessKey (or a SharedAccessSignature)")
		}
	}
	return c, nil
}

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("eventhubs: config: %w: %s", broker.ErrInvalidOption, fmt.Sprintf(format, args...))
	}
	if c.Namespace == "" {
		return bad("Namespace is required")
	}
	if strings.ContainsAny(c.Namespace, "/@ ") {
		return bad("Namespace %q must be a host[:port]", redact.Target(c.Namespace))
	}
	if c.Credential == nil && c.SharedAccessSignature == "" && (c.KeyName == "" || c.Key == "") {
		return bad("no credentials: set KeyName and Key, SharedAccessSignature or Credential")
	}
	if c.SharedAccessSignature != "" && !strings.HasPrefix(c.SharedAccessSignature, "SharedAccessSignature ") {
		return bad("SharedAccessSignature must start with \"SharedAccessSignature \"")
	}
	if c.CustomEndpoint != "" {
		if err := checkHostPort(c.CustomEndpoint); err != nil {
			return bad("CustomEndpoint %q must be a host[:port] (no scheme or path): %v", c.CustomEndpoint, err)
		}
	}
	switch {
	case c.MaxMessageSize < 0:
		return bad("MaxMessageSize %d is negative", c.MaxMessageSize)
	case c.TokenTTL < 0:
		return bad("TokenTTL %v is negative", c.TokenTTL)
	case c.KeepAlive < 0:
		return bad("KeepAlive %v is negative", c.KeepAlive)
	case c.DialTimeout < 0:
		return bad("DialTimeout %v is negative", c.DialTimeout)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.TokenTTL < time.Second {
		return bad("TokenTTL %v is below one second", c.TokenTTL)
	}
	if c.Reconnect != ReconnectLazy && c.Reconnect != ReconnectEager {
		return bad("unknown Reconnect mode %d", c.Reconnect)
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = DefaultRetryAttempts
	}
	if c.Retry.MaxAttempts < 0 {
		c.Retry.MaxAttempts = 0
	}
	if c.Backoff == (broker.Backoff{}) {
		// The deprecated fields, as they were read: non-positive is the
		// default, a MaxDelay below BaseDelay is raised to it.
		c.Backoff = broker.Backoff{Initial: max(c.Retry.BaseDelay, 0), Max: max(c.Retry.MaxDelay, 0)}
		if c.Backoff.Initial > 0 && c.Backoff.Max > 0 && c.Backoff.Max < c.Backoff.Initial {
			c.Backoff.Max = c.Backoff.Initial
		}
	}
	bo, err := driver.ResolveBackoff("Backoff", c.Backoff, broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax})
	if err != nil {
		return Config{}, fmt.Errorf("eventhubs: config: %w", err)
	}
	c.Backoff = bo
	c.Retry.BaseDelay, c.Retry.MaxDelay = 0, 0 // read through Backoff only
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// checkHostPort accepts "host", "host:port", "[v6]:port" and a bare IPv6
// address.
func checkHostPort(s string) error {
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/@?# ") {
		return errors.New("not a bare host")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if net.ParseIP(strings.Trim(s, "[]")) != nil {
			return nil // an IPv6 address without a port
		}
		if strings.Contains(s, ":") {
			return err
		}
		host = s
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		return errors.New("empty host")
	}
	return nil
}

// dialAddr is the address dialed: CustomEndpoint or else Namespace, with
// the transport's default port when it has none.
func (c *Config) dialAddr() string {
	addr := c.Namespace
	if c.CustomEndpoint != "" {
		addr = c.CustomEndpoint
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	port := tlsPort
	switch {
	case c.WebSockets && c.UseDevelopmentEmulator:
		port = wsPort
	case c.WebSockets:
		port = wssPort
	case c.UseDevelopmentEmulator:
		port = emulatorPort
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), port)
}

// serverName is the namespace's host: the TLS server name.
func (c *Config) serverName() string {
	if host, _, err := net.SplitHostPort(c.Namespace); err == nil {
		return host
	}
	return strings.Trim(c.Namespace, "[]")
}

// scheme is amqp for the emulator, amqps otherwise.
func (c *Config) scheme() string {
	if c.UseDevelopmentEmulator {
		return "amqp"
	}
	return "amqps"
}

// audience is the CBS audience of an entity path ("" = the namespace).
func (c *Config) audience(entity string) string {
	return c.scheme() + "://" + c.Namespace + "/" + entity
}

// parseURL parses the eventhubs:// URL form (see OpenURL).
func parseURL(s string) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("eventhubs: url %s: %w: %s", redact.Target(s), broker.ErrInvalidOption, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("does not parse")
	}
	if u.Scheme != "eventhubs" {
		return bad("scheme %q, want eventhubs", u.Scheme)
	}
	if u.Host == "" {
		return bad("missing host (want eventhubs://keyName:key@namespace/hub)")
	}
	var c Config
	c.Namespace = u.Host
	c.EventHub = strings.Trim(u.Path, "/")
	if strings.Contains(c.EventHub, "/") {
		return bad("path %q names more than one event hub", u.Path)
	}
	if u.User != nil {
		c.KeyName = u.User.Username()
		c.Key, _ = u.User.Password()
	}
	q := u.Query()
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch strings.ToLower(k) {
		case "emulator", "usedevelopmentemulator":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("emulator=%q is not a boolean", v)
			}
			c.UseDevelopmentEmulator = b
		case "sharedaccesssignature":
			c.SharedAccessSignature = v
		case "keepalive":
			d, err := time.ParseDuration(v)
			if err != nil {
				return bad("keepalive=%q is not a duration", v)
			}
			c.KeepAlive = d
		case "reconnect":
			switch strings.ToLower(v) {
			case "lazy":
				c.Reconnect = ReconnectLazy
			case "eager":
				c.Reconnect = ReconnectEager
			default:
				return bad("reconnect=%q, want lazy or eager", v)
			}
		case "max_message_size":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return bad("max_message_size=%q is not a positive integer", v)
			}
			c.MaxMessageSize = n
		case "custom_endpoint":
			c.CustomEndpoint = v
		case "websockets":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("websockets=%q is not a boolean", v)
			}
			c.WebSockets = b
		default:
			return bad("unknown parameter %q", k)
		}
	}
	if c.SharedAccessSignature == "" {
		if c.KeyName == "" {
			return bad("missing key name (want eventhubs://keyName:key@host/hub)")
		}
		if c.Key == "" {
			return bad("missing key (want eventhubs://keyName:key@host/hub, key percent-encoded)")
		}
	}
	return c, nil
}
