package eventhubs

import (
	"context"
	"log/slog"
	"strings"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// OpenURL opens a Broker from target, with opts applied in order to the
// Config it describes. target is either an Event Hubs connection string
// (see ParseConnectionString: "Endpoint=sb://…;SharedAccessKeyName=…;
// SharedAccessKey=…[;EntityPath=hub][;UseDevelopmentEmulator=true]") or
// the URL form
//
//	eventhubs://<keyName>:<key>@<namespace>[:port][/<hub>][?param=value&…]
//
// where the key is percent-encoded (url.UserPassword does it) and the
// parameters are emulator=true (plain TCP, default port 5672, like
// UseDevelopmentEmulator), sharedaccesssignature=<a percent-encoded
// SharedAccessSignature, instead of key name and key>, keepalive=<duration>, reconnect=lazy|eager,
// max_message_size=<bytes>, custom_endpoint=<host[:port] to dial instead of
// the namespace> (Config.CustomEndpoint) and websockets=true (AMQP over
// WebSockets, Config.WebSockets). Example:
//
//	eventhubs://RootManageSharedAccessKey:c2VjcmV0@127.0.0.1:5672/orders?emulator=true
//
// Errors for a malformed target wrap broker.ErrInvalidOption, name the bad
// key or parameter and never contain the key or signature. Otherwise it
// behaves as Open.
func OpenURL(ctx context.Context, target string, opts ...Option) (*Broker, error) {
	cfg, err := urlConfig(target, opts...)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// urlConfig is the Config OpenURL opens: target parsed, opts applied.
func urlConfig(target string, opts ...Option) (Config, error) {
	cfg, err := parseTarget(target)
	if err != nil {
		return Config{}, err
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg, nil
}

// parseTarget parses a connection string or an eventhubs:// URL.
func parseTarget(target string) (Config, error) {
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(target)), "eventhubs://") {
		return parseURL(strings.TrimSpace(target))
	}
	return ParseConnectionString(target)
}

// Opener opens a Broker for a registry's connection strings and
// eventhubs:// URLs: OpenURL(ctx, target) named oc.Name, logging through
// oc.Logger (nil: slog.Default()). Its signature is registry.Opener's, so
// reg.Register("eventhubs", eventhubs.Opener) works as it is.
func Opener(ctx context.Context, target string, oc driver.OpenConfig) (broker.Broker, error) {
	b, err := OpenURL(ctx, target, WithLogger(oc.Logger), WithName(oc.Name), WithTelemetry(oc.Telemetry))
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return b, nil
}

// OpenConfig is Open.
//
// Deprecated: use Open, which now takes the Config.
func OpenConfig(ctx context.Context, cfg Config) (*Broker, error) { return Open(ctx, cfg) }

// OpenTarget is Opener with the registry's settings as arguments.
//
// Deprecated: use Opener, or OpenURL with WithLogger and WithName.
func OpenTarget(ctx context.Context, target string, logger *slog.Logger, name string) (broker.Broker, error) {
	return Opener(ctx, target, driver.OpenConfig{Name: name, Logger: logger})
}
