package rabbit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
	"github.com/isobroker/broker/internal/redact"
)

// Defaults for Config.
const (
	// DefaultDialTimeout bounds one connection attempt: TCP, TLS and the
	// AMQP handshake (Config.DialTimeout).
	DefaultDialTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds every socket write. A write that cannot
	// complete in time (a peer that stopped reading) fails, and the
	// connection is recovered, instead of blocking forever.
	DefaultWriteTimeout = 15 * time.Second
	// DefaultHeartbeat is the AMQP heartbeat interval requested from the
	// server; a silent peer is detected after three intervals.
	DefaultHeartbeat = 10 * time.Second
	// DefaultPublishChannels is the most confirm-mode channels publishes
	// are spread over (see Config.PublishChannels).
	DefaultPublishChannels = 4
	// DefaultPublishWindow bounds, per publishing channel, the messages
	// written but not yet confirmed. Measured with one caller publishing
	// 2,000 × 1 KiB per call (RabbitMQ 3.10 on 2 cores): on loopback 32 →
	// 12.1k msg/s, 128 → 16.3k, 512 → 16.3k, 2048 → 14.6k; at a 10 ms round
	// trip 128 → 7.7k, 512 → 11.5k, 1024 → 12.2k, 2048 → 13.4k. 512 keeps
	// nearly all of the throughput while bounding what a call cut short
	// leaves in flight; raise it for high-latency links.
	DefaultPublishWindow = 512
	// PrefetchRate is the delivery rate, in messages per second per
	// subscription, that the default prefetch keeps up across one round
	// trip to the server: a consumer that acknowledges a message gets the
	// next one a round trip later, so a prefetch below rate × round trip
	// caps the subscription below rate however fast its handlers are.
	// Without broker.Prefetch, Subscribe (and every resumption after a
	// reconnect) measures the round trip of its basic.qos and sets the
	// prefetch to max(2 × Concurrency, MinAutoPrefetch, PrefetchRate ×
	// round trip), at most MaxAutoPrefetch: 128 on loopback and at 2 ms,
	// 400 at 20 ms.
	PrefetchRate = 20000
	// MinAutoPrefetch is the least prefetch chosen without
	// broker.Prefetch. A round trip measured on an idle connection is
	// shorter than the one under load, when the server (on loopback, the
	// same CPUs as the client) answers an ack late: end to end on 2 shared
	// cores, 1 KiB messages, a prefetch of 16 delivered 0.70× of what 256
	// did, 64 0.95×, 256 0.99× (the raw client's, with 256, as 1.0×).
	MinAutoPrefetch = 128
	// MaxAutoPrefetch caps the prefetch chosen from the round trip (not
	// an explicit broker.Prefetch): every prefetched message of a quorum
	// queue counts as a failed delivery when its consumer is lost.
	MaxAutoPrefetch = 1000
	// DefaultMaxMessageSize matches RabbitMQ's default max_message_size
	// (128 MiB).
	DefaultMaxMessageSize = 128 << 20
	// DefaultBackoffInitial is Config.Backoff's default first step
	// between recovery rounds (every host tried once per round).
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax is Config.Backoff's default cap.
	DefaultBackoffMax = 10 * time.Second
	// DefaultReconnectInitial is DefaultBackoffInitial.
	//
	// Deprecated: use DefaultBackoffInitial.
	DefaultReconnectInitial = DefaultBackoffInitial
	// DefaultReconnectMax is DefaultBackoffMax.
	//
	// Deprecated: use DefaultBackoffMax.
	DefaultReconnectMax = DefaultBackoffMax
	// DefaultCloseTimeout bounds the connection close handshake when the
	// Close context has no deadline.
	DefaultCloseTimeout = 5 * time.Second
)

// Config configures Open. Only URLs is required; zero values take the
// defaults above. Name, Logger, TLSConfig, DialTimeout, Backoff and
// MaxMessageSize mean the same in every adapter's Config (and have the same
// With… options). Open refuses a negative duration or size, and a
// Backoff.Max below Backoff.Initial, with an error wrapping
// broker.ErrInvalidOption that names the field, before anything is
// dialled.
type Config struct {
	// URLs are the servers, tried in turn on every (re)connect. Each is an
	// amqp:// or amqps:// URL and may itself list several hosts separated
	// by commas ("amqp://user:pass@h1:5672,h2:5672/vhost"); they share its
	// credentials, vhost and query. For amqps the query parameters
	// cacertfile, certfile, keyfile and server_name_indication configure
	// TLS when TLSConfig is nil.
	URLs []string
	// Name identifies the instance in logs and in the server's connection
	// list (client property connection_name).
	Name string
	// Logger receives lifecycle logs (default slog.Default()).
	Logger *slog.Logger
	// TLSConfig is used for amqps URLs (cloned for every dial; its
	// ServerName, when empty, is the host dialled). Nil: the deprecated
	// TLS field when set, else built from the URL's query (see URLs) with
	// TLS 1.2 as minimum version.
	TLSConfig *tls.Config
	// TLS is the former name of TLSConfig, used when TLSConfig is nil.
	//
	// Deprecated: use TLSConfig.
	TLS *tls.Config
	// DialTimeout bounds each connection attempt — TCP, TLS and the AMQP
	// handshake (DefaultDialTimeout) — at Open and at every reconnect.
	DialTimeout time.Duration
	// WriteTimeout bounds each socket write (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Heartbeat is the requested heartbeat interval (DefaultHeartbeat).
	Heartbeat time.Duration
	// PublishChannels is the most channels the publishing pool opens
	// (DefaultPublishChannels). One is opened with the connection; another
	// each time a Publish finds the writer of the channel it picked busy
	// with another call, until there are PublishChannels: callers that
	// publish one at a time hold one channel.
	PublishChannels int
	// PublishWindow is how many messages one publishing channel may have
	// written and not yet confirmed (DefaultPublishWindow). A Publish
	// waits for room, by its ctx, before it writes more.
	PublishWindow int
	// MaxMessageSize is the largest Body Publish accepts
	// (DefaultMaxMessageSize). Keep it at or below the server's
	// max_message_size.
	MaxMessageSize int
	// AllowUnroutable publishes without the mandatory flag: a message no
	// queue is bound for is then confirmed and dropped by the server, as
	// AMQP does by default. By default Publish uses mandatory and fails
	// such a message with broker.ErrUnroutable.
	AllowUnroutable bool
	// Backoff shapes the waits between recovery rounds, between attempts
	// to reopen a publishing channel, and between attempts to set a
	// consumer up again (see broker.Backoff; defaults
	// DefaultBackoffInitial and DefaultBackoffMax).
	Backoff broker.Backoff
	// ReconnectInitial and ReconnectMax are the former Backoff, used when
	// Backoff is zero.
	//
	// Deprecated: use Backoff.
	ReconnectInitial, ReconnectMax time.Duration
	// SingleConnection makes publishing and consuming share one AMQP
	// connection. By default subscriptions use a second connection, opened
	// on the first Subscribe, so that a memory or disk alarm, which makes
	// the server stop reading publishing connections, never stalls
	// consumers' acknowledgements.
	SingleConnection bool
	// Telemetry turns on OpenTelemetry traces, metrics and trace-context
	// propagation (see broker.Telemetry and the package doc); the zero
	// value turns them off.
	Telemetry broker.Telemetry
}

// String describes c with every URL's password masked.
func (c Config) String() string {
	urls := make([]string, len(c.URLs))
	for i, u := range c.URLs {
		urls[i] = redact.Target(u)
	}
	return fmt.Sprintf("rabbit.Config{URLs:%q Name:%q TLS:%t PublishChannels:%d PublishWindow:%d SingleConnection:%t}",
		urls, c.Name, c.TLSConfig != nil || c.TLS != nil, c.PublishChannels, c.PublishWindow, c.SingleConnection)
}

// GoString is String, so that %#v hides the passwords too.
func (c Config) GoString() string { return c.String() }

// LogValue makes slog print String.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Option adjusts the Config built by OpenURL. Options apply in order, a
// later one overriding an earlier one; a nil Option is skipped.
type Option func(*Config)

// WithName sets Config.Name.
func WithName(name string) Option { return func(c *Config) { c.Name = name } }

// WithLogger sets Config.Logger.
func WithLogger(l *slog.Logger) Option { return func(c *Config) { c.Logger = l } }

// WithTLSConfig sets Config.TLSConfig.
func WithTLSConfig(t *tls.Config) Option { return func(c *Config) { c.TLSConfig = t } }

// WithTLS sets Config.TLSConfig.
//
// Deprecated: use WithTLSConfig.
func WithTLS(t *tls.Config) Option { return WithTLSConfig(t) }

// WithDialTimeout sets Config.DialTimeout.
func WithDialTimeout(d time.Duration) Option { return func(c *Config) { c.DialTimeout = d } }

// WithBackoff sets Config.Backoff.
func WithBackoff(b broker.Backoff) Option { return func(c *Config) { c.Backoff = b } }

// WithMaxMessageSize sets Config.MaxMessageSize.
func WithMaxMessageSize(n int) Option { return func(c *Config) { c.MaxMessageSize = n } }

// WithTelemetry sets Config.Telemetry.
func WithTelemetry(t broker.Telemetry) Option { return func(c *Config) { c.Telemetry = t } }

// WithConfig applies f to the Config, for any other setting.
func WithConfig(f func(*Config)) Option { return f }

// endpoint is one host to connect to.
type endpoint struct {
	url      string // full URL with credentials: never log it
	redacted string // amqp://user:***@host:port/vhost
	uri      amqp.URI
	tls      *tls.Config // amqps only
}

// resolved is a validated Config.
type resolved struct {
	Config
	endpoints []endpoint
}

// resolve validates c and fills in the defaults; it dials nothing.
func (c Config) resolve() (*resolved, error) {
	bad := func(format string, args ...any) (*resolved, error) {
		return nil, fmt.Errorf("rabbit: config: %w: %s", broker.ErrInvalidOption, fmt.Sprintf(format, args...))
	}
	switch {
	case c.DialTimeout < 0:
		return bad("DialTimeout %v is negative", c.DialTimeout)
	case c.MaxMessageSize < 0:
		return bad("MaxMessageSize %d is negative", c.MaxMessageSize)
	}
	r := &resolved{Config: c}
	if r.TLSConfig == nil {
		r.TLSConfig = r.TLS
	}
	r.TLS = nil
	if r.Backoff == (broker.Backoff{}) {
		// The deprecated fields, as they were read: non-positive is the
		// default, a Max below Initial is raised to it.
		r.Backoff = broker.Backoff{Initial: max(r.ReconnectInitial, 0), Max: max(r.ReconnectMax, 0)}
		if r.Backoff.Initial > 0 && r.Backoff.Max > 0 && r.Backoff.Max < r.Backoff.Initial {
			r.Backoff.Max = r.Backoff.Initial
		}
	}
	b, err := driver.ResolveBackoff("Backoff", r.Backoff, broker.Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax})
	if err != nil {
		return nil, fmt.Errorf("rabbit: config: %w", err)
	}
	r.Backoff = b
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.DialTimeout <= 0 {
		r.DialTimeout = DefaultDialTimeout
	}
	if r.WriteTimeout <= 0 {
		r.WriteTimeout = DefaultWriteTimeout
	}
	if r.Heartbeat <= 0 {
		r.Heartbeat = DefaultHeartbeat
	}
	if r.PublishChannels <= 0 {
		r.PublishChannels = DefaultPublishChannels
	}
	if r.PublishWindow <= 0 {
		r.PublishWindow = DefaultPublishWindow
	}
	if r.MaxMessageSize <= 0 {
		r.MaxMessageSize = DefaultMaxMessageSize
	}
	if len(c.URLs) == 0 {
		return nil, fmt.Errorf("rabbit: %w: no URL given", broker.ErrInvalidOption)
	}
	for _, raw := range c.URLs {
		eps, err := splitHosts(raw)
		if err != nil {
			return nil, err
		}
		for _, ep := range eps {
			if ep.uri.Scheme == "amqps" {
				t, err := r.tlsFor(ep.uri)
				if err != nil {
					return nil, fmt.Errorf("rabbit: %s: %w", ep.redacted, err)
				}
				ep.tls = t
			}
			r.endpoints = append(r.endpoints, ep)
		}
	}
	return r, nil
}

// splitHosts parses one URL that may list several comma-separated hosts.
// Errors never contain the password.
func splitHosts(raw string) ([]endpoint, error) {
	raw = strings.TrimSpace(raw)
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || (scheme != "amqp" && scheme != "amqps") {
		return nil, fmt.Errorf("rabbit: %w: URL %q must start with amqp:// or amqps://",
			broker.ErrInvalidOption, redact.Target(raw))
	}
	// authority ends at the first '/', '?' or '#'.
	end := strings.IndexAny(rest, "/?#")
	authority, tail := rest, ""
	if end >= 0 {
		authority, tail = rest[:end], rest[end:]
	}
	if strings.Contains(tail, "@") {
		// Most likely a password with an unescaped '/', '?' or '#': a URL
		// parser would take part of it as the host, port or vhost, and
		// show it. Refuse it rather than guess.
		return nil, fmt.Errorf("rabbit: %w: URL %s has an '@' after its host: percent-encode '/', '?', '#' and '@' in the user name, password and vhost (%%2F, %%3F, %%23, %%40)",
			broker.ErrInvalidOption, redact.Target(raw))
	}
	userinfo, hosts := "", authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, hosts = authority[:at], authority[at+1:]
	}
	user, pass, hasPass := strings.Cut(userinfo, ":")
	secret := pass
	if p, err := url.PathUnescape(pass); err == nil {
		secret = p
	}
	redactedUser := user
	if hasPass {
		redactedUser += ":***"
	}
	if hosts == "" {
		return nil, fmt.Errorf("rabbit: %w: URL %s://%s@%s has no host",
			broker.ErrInvalidOption, scheme, redactedUser, tail)
	}
	var eps []endpoint
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		red := scheme + "://"
		if userinfo != "" {
			red += redactedUser + "@"
		}
		red += h + tail
		if h == "" {
			return nil, fmt.Errorf("rabbit: %w: URL %s has an empty host in its list", broker.ErrInvalidOption, redact.Target(raw))
		}
		full := scheme + "://"
		if userinfo != "" {
			full += userinfo + "@"
		}
		full += h + tail
		uri, err := amqp.ParseURI(full)
		if err != nil {
			// ParseURI's error may quote the URL: report our own text.
			return nil, fmt.Errorf("rabbit: %w: malformed URL %s: %s", broker.ErrInvalidOption, red,
				scrub(parseReason(err), secret, pass))
		}
		red = redactURI(uri)
		if uri.Port < 1 || uri.Port > 65535 {
			return nil, fmt.Errorf("rabbit: %w: URL %s: port %d out of range", broker.ErrInvalidOption, red, uri.Port)
		}
		eps = append(eps, endpoint{url: full, redacted: red, uri: uri})
	}
	return eps, nil
}

// redactURI renders uri as amqp://user:***@host:port/vhost.
func redactURI(uri amqp.URI) string {
	vhost := uri.Vhost
	if vhost == "/" {
		vhost = ""
	}
	return fmt.Sprintf("%s://%s:***@%s:%d/%s", uri.Scheme, uri.Username, uri.Host, uri.Port, url.PathEscape(vhost))
}

// scrub replaces every secret in s, as it is and as %q escapes it (the
// text of a parse error quotes its input).
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		s = strings.ReplaceAll(s, sec, "***")
		if q := strconv.Quote(sec); len(q) > 2 {
			s = strings.ReplaceAll(s, q[1:len(q)-1], "***")
		}
	}
	return s
}

// parseReason is amqp091's parse error without its long hint, and without
// the URL a *url.Error quotes: only what was wrong with it.
func parseReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s := firstLine(err.Error())
	if i := strings.Index(s, " (if the username"); i > 0 {
		s = s[:i]
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// tlsFor returns the TLS config for an amqps endpoint: a clone of
// Config.TLSConfig (or the deprecated TLS), or one built from the URL's query. Files are read now, so a
// bad path is reported by Open before anything is dialled.
func (r *resolved) tlsFor(uri amqp.URI) (*tls.Config, error) {
	var t *tls.Config
	if r.TLSConfig != nil {
		t = r.TLSConfig.Clone()
	} else {
		t = &tls.Config{MinVersion: tls.VersionTLS12}
		if uri.CACertFile != "" {
			pem, err := os.ReadFile(uri.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("%w: cacertfile: %v", broker.ErrInvalidOption, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: cacertfile %s holds no PEM certificate", broker.ErrInvalidOption, uri.CACertFile)
			}
			t.RootCAs = pool
		}
		if uri.CertFile != "" || uri.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(uri.CertFile, uri.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("%w: certfile/keyfile: %v", broker.ErrInvalidOption, err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		t.ServerName = uri.ServerName
	}
	if t.ServerName == "" {
		t.ServerName = uri.Host
	}
	return t, nil
}
