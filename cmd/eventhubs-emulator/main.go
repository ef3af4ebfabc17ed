// Command eventhubs-emulator runs the isobroker Event Hubs emulator as a
// standalone AMQP 1.0 server, so clients in any language can test against
// it without Docker or Azure. It prints one connection string per hub (and
// one for the namespace) on standard output and serves until interrupted.
//
// Usage:
//
//	eventhubs-emulator [-addr 127.0.0.1:5672] [-port 5672]
//	    [-hubs name[:partitions],...] [-hub name[:partitions[:group,group]]]...
//	    [-partitions 4] [-consumer-groups group,...]
//	    [-key-name RootManageSharedAccessKey] [-key KEY] [-config file.json]
//	    [-tls-cert cert.pem -tls-key key.pem] [-websocket-addr 127.0.0.1:5443]
//
// For example, two hubs with a "billing" consumer group each, on the port
// the SDKs expect by default, with a fixed key:
//
//	eventhubs-emulator -port 5672 -hubs orders:4,payments:2 -consumer-groups billing -key c2VjcmV0
//
// -addr is the listen address (host:port; port 0 picks a free one); -port
// replaces its port. -hubs lists hubs with optional partition counts
// (-partitions is the default), -hub adds one hub with its own consumer
// groups, and -consumer-groups adds groups to every hub ($Default always
// exists). When the listen host is unspecified (0.0.0.0 or ::), the
// printed connection strings name 127.0.0.1.
//
// -tls-cert and -tls-key (PEM files, both or neither) make the emulator
// serve TLS (amqps) with that certificate; the printed connection strings
// then have no UseDevelopmentEmulator, and name the listen address, so the
// certificate must cover it (an IP SAN for 127.0.0.1) or clients must set
// their TLS server name. -websocket-addr adds a listener for AMQP over
// WebSockets (ws://<addr>/$servicebus/websocket, wss:// with TLS,
// subprotocol AMQPWSB10); its address is logged ("emulator listening for
// WebSockets"), and clients use it as the endpoint with their WebSocket
// option.
//
// Ready output: once listening, the emulator prints the namespace's
// connection string and then one per hub (with EntityPath), one a line, on
// standard output; logs go to standard error.
//
// The JSON config file mirrors the flags:
//
//	{
//	  "addr": "127.0.0.1:5672",
//	  "port": 5672,
//	  "namespace": "emulator",
//	  "hubs": [{"name": "orders", "partitions": 4, "consumer_groups": ["billing"]}],
//	  "consumer_groups": ["audit"],
//	  "key_name": "RootManageSharedAccessKey",
//	  "key": "c2VjcmV0",
//	  "default_partitions": 4,
//	  "auto_create": true,
//	  "allow_anonymous": false,
//	  "retention_count": 0,
//	  "retention_bytes": 0,
//	  "max_message_size": 1048576,
//	  "idle_timeout": "60s",
//	  "link_idle_timeout": "30m",
//	  "tls_cert_file": "cert.pem",
//	  "tls_key_file": "key.pem",
//	  "websocket_addr": "127.0.0.1:5443"
//	}
//
// Flags given on the command line override the file.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/isobroker/broker/eventhubs/emulator"
)

type hubFile struct {
	Name           string   `json:"name"`
	Partitions     int      `json:"partitions"`
	ConsumerGroups []string `json:"consumer_groups"`
}

type configFile struct {
	Addr              string    `json:"addr"`
	Port              *int      `json:"port"`
	ConsumerGroups    []string  `json:"consumer_groups"`
	Namespace         string    `json:"namespace"`
	Hubs              []hubFile `json:"hubs"`
	KeyName           string    `json:"key_name"`
	Key               string    `json:"key"`
	DefaultPartitions int       `json:"default_partitions"`
	AutoCreate        bool      `json:"auto_create"`
	AllowAnonymous    bool      `json:"allow_anonymous"`
	RetentionCount    int       `json:"retention_count"`
	RetentionBytes    int64     `json:"retention_bytes"`
	MaxMessageSize    uint64    `json:"max_message_size"`
	IdleTimeout       string    `json:"idle_timeout"`
	LinkIdleTimeout   string    `json:"link_idle_timeout"`
	TLSCertFile       string    `json:"tls_cert_file"`
	TLSKeyFile        string    `json:"tls_key_file"`
	WebSocketAddr     string    `json:"websocket_addr"`
}

type hubFlags []hubFile

func (h *hubFlags) String() string { return fmt.Sprint(*h) }

// Set parses name[:partitions[:group,group...]].
func (h *hubFlags) Set(v string) error {
	parts := strings.SplitN(v, ":", 3)
	hf := hubFile{Name: parts[0]}
	if len(parts) > 1 && parts[1] != "" {
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return fmt.Errorf("hub %q: partitions: %w", v, err)
		}
		hf.Partitions = n
	}
	if len(parts) > 2 && parts[2] != "" {
		hf.ConsumerGroups = strings.Split(parts[2], ",")
	}
	*h = append(*h, hf)
	return nil
}

// hubList is -hubs: name[:partitions] entries separated by commas.
type hubList struct{ h *hubFlags }

func (l hubList) String() string {
	if l.h == nil {
		return ""
	}
	return l.h.String()
}

func (l hubList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return fmt.Errorf("hubs %q: empty entry", v)
		}
		if strings.Count(item, ":") > 1 {
			return fmt.Errorf("hubs %q: entry %q: want name[:partitions] (use -hub for per-hub consumer groups)", v, item)
		}
		if err := l.h.Set(item); err != nil {
			return err
		}
	}
	return nil
}

// groupList is -consumer-groups: groups separated by commas.
type groupList []string

func (g *groupList) String() string { return strings.Join(*g, ",") }

func (g *groupList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return fmt.Errorf("consumer-groups %q: empty entry", v)
		}
		*g = append(*g, item)
	}
	return nil
}

// withPort replaces the port of the listen address addr.
func withPort(addr string, port int) (string, error) {
	if port < 0 || port > 65535 {
		return "", fmt.Errorf("port %d out of range", port)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("addr %q: %w", addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// dialable rewrites a connection string whose endpoint is an unspecified
// address (a listener on every interface) to name 127.0.0.1, which clients
// can dial.
func dialable(cs string) string {
	rest, ok := strings.CutPrefix(cs, "Endpoint=sb://")
	if !ok {
		return cs
	}
	end := strings.IndexByte(rest, ';')
	if end < 0 {
		return cs
	}
	host, port, err := net.SplitHostPort(rest[:end])
	if err != nil {
		return cs
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return cs
	}
	return "Endpoint=sb://" + net.JoinHostPort("127.0.0.1", port) + rest[end:]
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "eventhubs-emulator:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eventhubs-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var hubs hubFlags
	var groups groupList
	configPath := fs.String("config", "", "JSON config file")
	addr := fs.String("addr", "", "listen address host:port (default 127.0.0.1:5672; port 0: a free port)")
	port := fs.Int("port", 0, "listen port, replacing the port of -addr (0: a free port)")
	namespace := fs.String("namespace", "", "namespace name used in error texts")
	keyName := fs.String("key-name", "", "shared access key name (default RootManageSharedAccessKey)")
	key := fs.String("key", "", "shared access key (default: random)")
	partitions := fs.Int("partitions", 0, "default partition count (default 4)")
	autoCreate := fs.Bool("auto-create", false, "create unknown hubs and consumer groups on first use")
	anonymous := fs.Bool("allow-anonymous", false, "accept links without a CBS token")
	retentionCount := fs.Int("retention-count", 0, "keep at most this many events per partition (0: all)")
	retentionBytes := fs.Int64("retention-bytes", 0, "keep at most this many bytes per partition (0: all)")
	maxMessage := fs.Uint64("max-message-size", 0, "largest accepted message in bytes (default 1 MiB)")
	idle := fs.Duration("idle-timeout", 0, "close connections idle for this long (default 60s, negative: never)")
	linkIdle := fs.Duration("link-idle-timeout", 0, "detach event links idle for this long (default 30m, negative: never)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) file: serve TLS (amqps) with it; needs -tls-key")
	tlsKey := fs.String("tls-key", "", "PEM private key file of -tls-cert")
	wsAddr := fs.String("websocket-addr", "", "also serve AMQP over WebSockets on this host:port (port 0: a free one)")
	fs.Var(&hubs, "hub", "hub to create: name[:partitions[:group,group]] (repeatable)")
	fs.Var(hubList{&hubs}, "hubs", "hubs to create: name[:partitions],name[:partitions]... (repeatable)")
	fs.Var(&groups, "consumer-groups", "consumer groups to create on every hub besides $Default: group,group... (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	var cf configFile
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return fmt.Errorf("reading config: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cf); err != nil {
			return fmt.Errorf("parsing config %s: %w", *configPath, err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	pickS := func(name, flagV, fileV, def string) string {
		if set[name] {
			return flagV
		}
		if fileV != "" {
			return fileV
		}
		return def
	}
	cfg := emulator.Config{
		Addr:              pickS("addr", *addr, cf.Addr, "127.0.0.1:5672"),
		Namespace:         pickS("namespace", *namespace, cf.Namespace, ""),
		KeyName:           pickS("key-name", *keyName, cf.KeyName, ""),
		Key:               pickS("key", *key, cf.Key, ""),
		DefaultPartitions: cf.DefaultPartitions,
		AutoCreate:        cf.AutoCreate || *autoCreate,
		AllowAnonymous:    cf.AllowAnonymous || *anonymous,
		RetentionCount:    cf.RetentionCount,
		RetentionBytes:    cf.RetentionBytes,
		MaxMessageSize:    cf.MaxMessageSize,
	}
	if set["partitions"] {
		cfg.DefaultPartitions = *partitions
	}
	if set["retention-count"] {
		cfg.RetentionCount = *retentionCount
	}
	if set["retention-bytes"] {
		cfg.RetentionBytes = *retentionBytes
	}
	if set["max-message-size"] {
		cfg.MaxMessageSize = *maxMessage
	}
	var err error
	switch {
	case set["port"]:
		cfg.Addr, err = withPort(cfg.Addr, *port)
	case cf.Port != nil && !set["addr"]:
		cfg.Addr, err = withPort(cfg.Addr, *cf.Port)
	}
	if err != nil {
		return err
	}
	if cfg.IdleTimeout, err = pickDuration(set["idle-timeout"], *idle, cf.IdleTimeout); err != nil {
		return fmt.Errorf("idle_timeout: %w", err)
	}
	if cfg.LinkIdleTimeout, err = pickDuration(set["link-idle-timeout"], *linkIdle, cf.LinkIdleTimeout); err != nil {
		return fmt.Errorf("link_idle_timeout: %w", err)
	}
	allGroups := append(append([]string(nil), cf.ConsumerGroups...), groups...)
	for _, h := range append(cf.Hubs, hubs...) {
		cg := append(append([]string(nil), h.ConsumerGroups...), allGroups...)
		cfg.Hubs = append(cfg.Hubs, emulator.HubConfig{Name: h.Name, Partitions: h.Partitions, ConsumerGroups: cg})
	}
	cfg.WebSocketAddr = pickS("websocket-addr", *wsAddr, cf.WebSocketAddr, "")
	certFile, keyFile := pickS("tls-cert", *tlsCert, cf.TLSCertFile, ""), pickS("tls-key", *tlsKey, cf.TLSKeyFile, "")
	if (certFile == "") != (keyFile == "") {
		return errors.New("tls: give both a certificate (-tls-cert, tls_cert_file) and its key (-tls-key, tls_key_file), or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	emu, err := emulator.New(cfg)
	if err != nil {
		return err
	}
	if err := emu.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, dialable(emu.ConnectionString("")))
	for _, h := range cfg.Hubs {
		fmt.Fprintln(stdout, dialable(emu.ConnectionString(h.Name)))
	}
	<-ctx.Done()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := emu.Close(closeCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func pickDuration(fromFlag bool, flagV time.Duration, fileV string) (time.Duration, error) {
	if fromFlag {
		return flagV, nil
	}
	if fileV == "" {
		return 0, nil
	}
	return time.ParseDuration(fileV)
}
