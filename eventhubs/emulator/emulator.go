// Package emulator is a pure-Go Azure Event Hubs emulator: a real AMQP 1.0
// server over TCP that speaks enough of the Event Hubs dialect for the
// official Azure SDK for Go (azeventhubs, with a UseDevelopmentEmulator=true
// connection string), the official JavaScript SDK (@azure/event-hubs; its
// conformance suite is in ./jsinterop) and go-amqp clients to work against
// it unchanged.
//
// One Emulator is one namespace with its own listeners, hubs, partitions and
// connections. Two emulators in one process share nothing.
//
// Networks: by default it serves plain TCP (amqp://, what
// UseDevelopmentEmulator=true clients speak). With Config.TLSConfig it
// serves TLS with the given certificate (amqps://, as the service on port
// 5671); the config's GetConfigForClient sees each client's server name
// (SNI). With Config.WebSocketAddr it also serves AMQP over WebSockets on a
// second listener, as the service does on port 443: HTTP/1.1 upgrades at
// /$servicebus/websocket with the subprotocol AMQPWSB10 (or "amqp"), over
// TLS when TLSConfig is set; a WebSocket's binary messages carry the AMQP
// bytes of one connection, which is then served exactly as a TCP one (the
// same handshake, idle closes, faults and Close).
//
// What it emulates: SASL ANONYMOUS and PLAIN; the AMQP 1.0 connection,
// session and link protocol with flow control, multi-frame transfers and
// heartbeats; CBS put-token with SAS validation; $management READ of hub and
// partition properties; RPC replies sent to the receiver whose target
// address is the request's reply-to, else to the one named after it (the
// JavaScript SDK's $cbs reply link has no target); senders to a hub (round-robin or partition-key
// hash) or to one partition, single events and batches (message format
// 0x80013700); per-partition append-only logs with sequence numbers, string
// offsets and server-stamped enqueued times, bounded by count or bytes;
// receivers with the selector start filter, epoch (owner level) semantics,
// the non-epoch receiver limit and the runtime metric (capability
// com.microsoft:enable-receiver-runtime-metric: last-enqueued values in each
// event's delivery annotations); the service's idle closes; and on-demand
// fault injection through Faults.
//
// Idle behaviour follows the service: a connection without event links
// that carries no traffic but heartbeats for Config.IdleTimeout is closed
// with amqp:connection:forced and the service's "The connection was
// inactive for more than the allowed N milliseconds…" text; event links
// without transfers for Config.LinkIdleTimeout are detached with
// amqp:link:detach-forced. The emulator advertises an idle-time-out and
// sends heartbeats at half the client's.
//
// Authorization: put-token on $cbs validates shared access signatures
// against the configured keys (401 otherwise) and records a claim; event
// links need a claim covering their address unless the connection
// authenticated with SASL PLAIN (key name and key) or AllowAnonymous is
// set, and an event link is detached with amqp:unauthorized-access once no
// unexpired claim covers it, so a client must renew its tokens in time.
// Audiences and SAS resources are compared by path; scheme and host are
// ignored, since the emulator answers on whatever address it is given.
//
// Strictness: the emulator enforces the AMQP 1.0 rules a client can break —
// a delivery-id that changes inside a multi-frame delivery detaches the
// link with amqp:not-allowed; a frame on a channel with no session, a
// session begun twice or a Begin answering nothing closes the connection
// with amqp:not-allowed; unknown handles, handles in use and window
// violations end the session — because these are the traces of a client
// that abandoned an operation half way, which the service may tolerate on
// one day and not the next. Where it is stricter than the service: the
// service is not documented to close a connection for an End on a channel
// it never saw begin, nor to check every handle and window as eagerly;
// clients that work against the emulator work against the service, not
// necessarily the other way round.
//
// What it does not emulate: the Kafka endpoint; the service's own TLS
// settings and certificate (it serves those it is given); WebSocket
// compression (permessage-deflate is not negotiated); Azure AD token
// validation (unless Config.TokenValidator does it); time-based
// retention (only by count or bytes); the service's exact wording when it
// detaches a link whose token expired; geo-replication
// (georeplication_factor is always 1); namespace management (hubs and
// consumer groups are created through this API or Config.AutoCreate, not
// ARM); capture, throttling units and quotas beyond Config's limits;
// transactions; idempotent publishing (the com.microsoft:idempotent-producer
// capability is not offered, so SDKs that ask for it publish without it);
// receiver settle mode "second" (echoed, but deliveries are
// settled at once); partition-key / partition conflicts (a key on a
// partition sender is stored, not refused); and the exact partition-key
// hash of the service (keys map to partitions by FNV-1a, stable within one
// emulator).
package emulator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/isobroker/broker/internal/amqpws"
)

// Default values of Config fields.
const (
	DefaultKeyName              = "RootManageSharedAccessKey"
	DefaultPartitions           = 4
	DefaultMaxMessageSize       = 1 << 20
	DefaultMaxFrameSize         = 65536
	DefaultIdleTimeout          = 60 * time.Second
	DefaultLinkIdleTimeout      = 30 * time.Minute
	DefaultHeartbeatTimeout     = 60 * time.Second
	DefaultHandshakeTimeout     = 20 * time.Second
	DefaultMaxNonEpochReceivers = 5
	DefaultConsumerGroup        = "$Default"
)

// Errors returned by the emulator's API.
var (
	// ErrClosed is returned by calls on an emulator that was closed.
	ErrClosed = errors.New("emulator: closed")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("emulator: already started")
	// ErrInvalidConfig wraps every configuration error.
	ErrInvalidConfig = errors.New("emulator: invalid configuration")
	// ErrHubExists is returned by AddHub for a name already in use.
	ErrHubExists = errors.New("emulator: event hub already exists")
	// ErrHubNotFound is returned for operations on an unknown hub.
	ErrHubNotFound = errors.New("emulator: event hub not found")
)

// HubConfig describes an event hub created at start-up.
type HubConfig struct {
	// Name of the hub (case-insensitive, like the service).
	Name string
	// Partitions is the partition count; 0 means Config.DefaultPartitions,
	// and a negative count is refused.
	Partitions int
	// ConsumerGroups lists groups besides $Default, which always exists.
	ConsumerGroups []string
}

// TokenValidator validates a token that is not a shared access signature
// (for example an Azure AD JWT, token type "jwt") for an audience. It
// returns the token's expiry, or an error to refuse it with status 401.
type TokenValidator func(tokenType, token, audience string) (time.Time, error)

// Config configures an Emulator. The zero value is usable.
type Config struct {
	// Addr is the listen address; default "127.0.0.1:0" (a free loopback port).
	Addr string
	// TLSConfig, when set, makes the listener at Addr speak TLS (amqps, as
	// the service on port 5671), and the WebSocket listener HTTPS (wss). It
	// must hold a certificate (Certificates, GetCertificate or
	// GetConfigForClient); clients must trust it and dial a name it covers.
	// Its GetConfigForClient sees each client's server name (SNI). Nil
	// serves plain TCP (amqp://, what UseDevelopmentEmulator=true clients
	// speak).
	TLSConfig *tls.Config
	// WebSocketAddr, when set, is the listen address of a second listener
	// that serves AMQP over WebSockets as the service does on port 443:
	// HTTP/1.1 (HTTPS with TLSConfig) upgrades at /$servicebus/websocket
	// with the subprotocol AMQPWSB10 (or "amqp", which the Go SDK's
	// examples offer); each WebSocket then carries one AMQP
	// connection, served exactly as one on Addr. "127.0.0.1:0" picks a free
	// loopback port (see Emulator.WebSocketAddr). Empty: no WebSockets.
	WebSocketAddr string
	// Namespace names the emulated namespace in logs and error texts;
	// default "emulator".
	Namespace string
	// Hubs are created at start-up.
	Hubs []HubConfig
	// DefaultPartitions is the partition count of hubs created without one
	// (default 4).
	DefaultPartitions int
	// AutoCreate creates unknown hubs and consumer groups on first use
	// instead of answering amqp:not-found.
	AutoCreate bool
	// RetentionCount bounds each partition to this many events (0: no bound).
	RetentionCount int
	// RetentionBytes bounds each partition's stored bytes (0: no bound). The
	// newest event is always kept.
	RetentionBytes int64
	// MaxMessageSize is the largest message (or batch) a sender may send,
	// advertised on attach; default 1 MiB.
	MaxMessageSize uint64
	// MaxFrameSize is the largest frame accepted; default 65536.
	MaxFrameSize uint32
	// IdleTimeout closes, with amqp:connection:forced, a connection that has
	// no event or management link and carried no traffic other than
	// heartbeats for this long, as the service does. Default 60 s; negative
	// disables.
	IdleTimeout time.Duration
	// LinkIdleTimeout detaches, with amqp:link:detach-forced, an event link
	// that carried no transfer for this long. Default 30 min; negative
	// disables.
	LinkIdleTimeout time.Duration
	// HeartbeatTimeout is the idle-time-out advertised in the open frame:
	// peers send heartbeats at half of it, and a peer silent for longer is
	// closed with amqp:resource-limit-exceeded. Default 60 s; negative
	// advertises none.
	HeartbeatTimeout time.Duration
	// HandshakeTimeout bounds protocol header, SASL and open exchange;
	// default 20 s.
	HandshakeTimeout time.Duration
	// KeyName and Key are the shared access key used by ConnectionString;
	// default "RootManageSharedAccessKey" and a random key.
	KeyName string
	Key     string
	// Keys holds further accepted shared access keys by name.
	Keys map[string]string
	// AllowAnonymous lets links attach without a CBS token and management
	// requests omit a valid security_token.
	AllowAnonymous bool
	// TokenValidator validates non-SAS tokens put on $cbs; without it such
	// tokens are refused with 401.
	TokenValidator TokenValidator
	// MaxNonEpochReceivers bounds receivers without an owner level per
	// partition and consumer group; default 5.
	MaxNonEpochReceivers int
	// Logger receives lifecycle logs; default slog.Default() with the
	// emulator's attributes. Secrets are never logged.
	Logger *slog.Logger
}

// Emulator is one emulated Event Hubs namespace.
type Emulator struct {
	cfg    Config
	log    *slog.Logger
	keys   map[string][]byte
	faults Faults

	mu      sync.Mutex
	hubs    map[string]*hub
	conns   map[*conn]struct{}
	ln      net.Listener
	wsLn    net.Listener // the WebSocket listener, or nil
	ws      *http.Server // serves wsLn
	started bool
	closed  bool

	ctx      context.Context // cancelled when Close begins
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	nextConn atomic.Uint64
	nextLink atomic.Uint64
}

// New validates cfg and returns an emulator that is not yet listening.
func New(cfg Config) (*Emulator, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "emulator"
	}
	if cfg.DefaultPartitions <= 0 {
		cfg.DefaultPartitions = DefaultPartitions
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	if cfg.MaxFrameSize < 512 {
		return nil, fmt.Errorf("%w: MaxFrameSize %d is below the AMQP minimum of 512", ErrInvalidConfig, cfg.MaxFrameSize)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.LinkIdleTimeout == 0 {
		cfg.LinkIdleTimeout = DefaultLinkIdleTimeout
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxNonEpochReceivers <= 0 {
		cfg.MaxNonEpochReceivers = DefaultMaxNonEpochReceivers
	}
	if t := cfg.TLSConfig; t != nil {
		if len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
			return nil, fmt.Errorf("%w: TLSConfig has no certificate (Certificates, GetCertificate or GetConfigForClient)", ErrInvalidConfig)
		}
		cfg.TLSConfig = t.Clone()
	}
	if cfg.RetentionCount < 0 || cfg.RetentionBytes < 0 {
		return nil, fmt.Errorf("%w: negative retention", ErrInvalidConfig)
	}
	if cfg.KeyName == "" {
		cfg.KeyName = DefaultKeyName
	}
	if cfg.Key == "" {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("emulator: generating key: %w", err)
		}
		cfg.Key = base64.StdEncoding.EncodeToString(b[:])
	}
	if strings.ContainsAny(cfg.KeyName, ";=") || strings.Contains(cfg.Key, ";") {
		return nil, fmt.Errorf("%w: key name or key contains ';' or '='", ErrInvalidConfig)
	}
	keys := map[string][]byte{cfg.KeyName: []byte(cfg.Key)}
	for name, k := range cfg.Keys {
		if name == "" || k == "" {
			return nil, fmt.Errorf("%w: empty key name or key in Keys", ErrInvalidConfig)
		}
		keys[name] = []byte(k)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	e := &Emulator{
		cfg:   cfg,
		log:   logger.With("component", "eventhubs-emulator", "namespace", cfg.Namespace),
		keys:  keys,
		hubs:  map[string]*hub{},
		conns: map[*conn]struct{}{},
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.faults.e = e
	for _, h := range cfg.Hubs {
		if _, err := e.addHub(h); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Start listens on Config.Addr and serves connections until Close. ctx
// bounds only the start-up.
func (e *Emulator) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started {
		return ErrAlreadyStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", e.cfg.Addr)
	if err != nil {
		return fmt.Errorf("emulator: listen on %s: %w", e.cfg.Addr, err)
	}
	if e.cfg.WebSocketAddr != "" {
		wsLn, err := lc.Listen(ctx, "tcp", e.cfg.WebSocketAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("emulator: listen on %s (WebSocketAddr): %w", e.cfg.WebSocketAddr, err)
		}
		e.wsLn, e.ws = wsLn, e.newWebSocketServer()
	}
	useTLS := e.cfg.TLSConfig != nil
	if useTLS {
		ln = tls.NewListener(ln, e.cfg.TLSConfig)
	}
	e.ln, e.started = ln, true
	e.wg.Add(1)
	go e.acceptLoop(ln)
	e.log.Info("emulator listening", "addr", ln.Addr().String(), "tls", useTLS)
	if e.ws != nil {
		e.wg.Add(1)
		go e.serveWebSockets()
		e.log.Info("emulator listening for WebSockets", "addr", e.wsLn.Addr().String(), "tls", useTLS, "path", amqpws.Path)
	}
	return nil
}

// Addr returns the listener's address, or "" before Start.
func (e *Emulator) Addr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln == nil {
		return ""
	}
	return e.ln.Addr().String()
}

// WebSocketAddr returns the WebSocket listener's address, or "" before
// Start or without Config.WebSocketAddr. Clients connect to
// ws://<addr>/$servicebus/websocket (wss:// with Config.TLSConfig).
func (e *Emulator) WebSocketAddr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.wsLn == nil {
		return ""
	}
	return e.wsLn.Addr().String()
}

// KeyName returns the name of the emulator's shared access key.
func (e *Emulator) KeyName() string { return e.cfg.KeyName }

// Key returns the emulator's shared access key.
func (e *Emulator) Key() string { return e.cfg.Key }

// ConnectionString returns a connection string for hub (no EntityPath when
// hub is empty) with UseDevelopmentEmulator=true, usable by the Azure SDK.
// With Config.TLSConfig it has no UseDevelopmentEmulator, so that clients
// use TLS; its endpoint is then Addr's IP and port, which the certificate
// must cover unless the client sets its own TLS server name.
func (e *Emulator) ConnectionString(hub string) string {
	s := fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=%s;SharedAccessKey=%s",
		e.Addr(), e.cfg.KeyName, e.cfg.Key)
	if e.cfg.TLSConfig == nil {
		s += ";UseDevelopmentEmulator=true"
	}
	if hub != "" {
		s += ";EntityPath=" + hub
	}
	return s
}

// Faults returns the fault-injection hooks of this emulator.
func (e *Emulator) Faults() *Faults { return &e.faults }

// AddHub creates an event hub at runtime with the given partition count
// (Config.DefaultPartitions when partitions is 0; negative is refused) and consumer groups
// besides $Default.
func (e *Emulator) AddHub(name string, partitions int, consumerGroups ...string) error {
	_, err := e.addHub(HubConfig{Name: name, Partitions: partitions, ConsumerGroups: consumerGroups})
	return err
}

// AddConsumerGroup adds a consumer group to an existing hub. Adding an
// existing group is not an error.
func (e *Emulator) AddConsumerGroup(hubName, group string) error {
	if err := validName(group); err != nil {
		return err
	}
	h := e.lookupHub(hubName, false)
	if h == nil {
		return fmt.Errorf("%w: %q", ErrHubNotFound, hubName)
	}
	h.group(group, true)
	return nil
}

// Hubs returns the names of the hubs, in no particular order.
func (e *Emulator) Hubs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.hubs))
	for _, h := range e.hubs {
		out = append(out, h.name)
	}
	return out
}

func validName(name string) error {
	if name == "" || len(name) > 256 || strings.ContainsAny(name, "/\\?#") {
		return fmt.Errorf("%w: invalid entity name %q", ErrInvalidConfig, name)
	}
	return nil
}

func (e *Emulator) addHub(hc HubConfig) (*hub, error) {
	if err := validName(hc.Name); err != nil {
		return nil, err
	}
	n := hc.Partitions
	if n < 0 {
		return nil, fmt.Errorf("%w: hub %q: %d partitions (0 takes the default)", ErrInvalidConfig, hc.Name, n)
	}
	if n == 0 {
		n = e.cfg.DefaultPartitions
	}
	if n > 1024 {
		return nil, fmt.Errorf("%w: %d partitions (at most 1024)", ErrInvalidConfig, n)
	}
	for _, g := range hc.ConsumerGroups {
		if err := validName(g); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	key := strings.ToLower(hc.Name)
	if _, ok := e.hubs[key]; ok {
		return nil, fmt.Errorf("%w: %q", ErrHubExists, hc.Name)
	}
	h := newHub(e, hc.Name, n)
	for _, g := range hc.ConsumerGroups {
		h.group(g, true)
	}
	e.hubs[key] = h
	e.log.Debug("event hub created", "hub", hc.Name, "partitions", n)
	return h, nil
}

// lookupHub finds a hub, creating it when create and Config.AutoCreate.
func (e *Emulator) lookupHub(name string, create bool) *hub {
	e.mu.Lock()
	h := e.hubs[strings.ToLower(name)]
	e.mu.Unlock()
	if h != nil || !create || !e.cfg.AutoCreate {
		return h
	}
	h, err := e.addHub(HubConfig{Name: name})
	if errors.Is(err, ErrHubExists) {
		e.mu.Lock()
		h = e.hubs[strings.ToLower(name)]
		e.mu.Unlock()
	}
	return h
}

func (e *Emulator) acceptLoop(ln net.Listener) {
	defer e.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			e.log.Warn("accept failed", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-e.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		c := e.register(nc)
		if c == nil {
			return
		}
		go c.serve()
	}
}

// register makes nc one of the emulator's connections, to be served by
// the caller (c.serve), or closes it and returns nil once Close has begun.
func (e *Emulator) register(nc net.Conn) *conn {
	c := newConn(e, nc)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		_ = nc.Close()
		return nil
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	return c
}

func (e *Emulator) removeConn(c *conn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.wg.Done()
}

// connections returns a snapshot of the live connections.
func (e *Emulator) connections() []*conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		out = append(out, c)
	}
	return out
}

// ConnectionCount returns the number of open client connections.
func (e *Emulator) ConnectionCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// Close stops accepting, closes every connection with
// amqp:connection:forced, and waits until all of the emulator's goroutines
// have ended or ctx is done; in the latter case sockets are closed
// abruptly, and Close still waits for the (then prompt) exit of every
// goroutine before returning ctx's error. Calling Close again returns nil.
func (e *Emulator) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.cancel()
	ln, ws := e.ln, e.ws
	e.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	if ws != nil {
		// Closes the listener and the HTTP connections not yet upgraded;
		// upgraded ones are the emulator's connections, closed below.
		_ = ws.Close()
	}
	finished := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		e.log.Info("emulator closed")
		return nil
	case <-ctx.Done():
	}
	for _, c := range e.connections() {
		_ = c.nc.Close()
	}
	<-finished
	e.log.Warn("emulator closed abruptly", "err", ctx.Err())
	return fmt.Errorf("emulator: close: %w", ctx.Err())
}
