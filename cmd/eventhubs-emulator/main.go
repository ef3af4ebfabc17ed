// Command eventhubs-emulator runs the isobroker Event Hubs emulator as a
// standalone AMQP 1.0 server, so clients in any language can test against
// it without Docker or Azure. It prints one connection string per hub (and
// one for the namespace) on standard output and serves until interrupted.
//
// Usage:
//
//	eventhubs-emulator [-addr 127.0.0.1:5672] [-hub name[:partitions[:group,group]]]... [-config file.json]
//
// The JSON config file mirrors the flags:
//
//	{
//	  "addr": "127.0.0.1:5672",
//	  "namespace": "emulator",
//	  "hubs": [{"name": "orders", "partitions": 4, "consumer_groups": ["billing"]}],
//	  "key_name": "RootManageSharedAccessKey",
//	  "key": "c2VjcmV0",
//	  "default_partitions": 4,
//	  "auto_create": true,
//	  "allow_anonymous": false,
//	  "retention_count": 0,
//	  "retention_bytes": 0,
//	  "max_message_size": 1048576,
//	  "idle_timeout": "60s",
//	  "link_idle_timeout": "30m"
//	}
//
// Flags given on the command line override the file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	configPath := fs.String("config", "", "JSON config file")
	addr := fs.String("addr", "", "listen address (default 127.0.0.1:5672)")
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
	fs.Var(&hubs, "hub", "hub to create: name[:partitions[:group,group]] (repeatable)")
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
	if cfg.IdleTimeout, err = pickDuration(set["idle-timeout"], *idle, cf.IdleTimeout); err != nil {
		return fmt.Errorf("idle_timeout: %w", err)
	}
	if cfg.LinkIdleTimeout, err = pickDuration(set["link-idle-timeout"], *linkIdle, cf.LinkIdleTimeout); err != nil {
		return fmt.Errorf("link_idle_timeout: %w", err)
	}
	for _, h := range append(cf.Hubs, hubs...) {
		cfg.Hubs = append(cfg.Hubs, emulator.HubConfig{Name: h.Name, Partitions: h.Partitions, ConsumerGroups: h.ConsumerGroups})
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
	fmt.Fprintln(stdout, emu.ConnectionString(""))
	for _, h := range cfg.Hubs {
		fmt.Fprintln(stdout, emu.ConnectionString(h.Name))
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
