package eventhubs

import (
	"context"
	"log/slog"
	"strings"

	"github.com/isobroker/broker"
)

// OpenTarget opens a Broker from a registry target: either an Event Hubs
// connection string ("Endpoint=sb://…;SharedAccessKeyName=…;
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
// name names the instance in logs and logger receives them (nil:
// slog.Default()). Errors wrap broker.ErrInvalidOption for malformed
// targets and never contain the key or signature.
func OpenTarget(ctx context.Context, target string, logger *slog.Logger, name string) (broker.Broker, error) {
	var cfg Config
	var err error
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(target)), "eventhubs://") {
		cfg, err = parseURL(strings.TrimSpace(target))
	} else {
		cfg, err = ParseConnectionString(target)
	}
	if err != nil {
		return nil, err
	}
	cfg.Logger, cfg.Name = logger, name
	return OpenConfig(ctx, cfg)
}
