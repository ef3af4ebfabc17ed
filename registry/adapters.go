package registry

import (
	"context"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/rabbit"
)

// openRabbit opens amqp:// and amqps:// URLs (several comma-separated
// hosts allowed; see rabbit.OpenURL).
func openRabbit(ctx context.Context, target string, cfg OpenConfig) (broker.Broker, error) {
	return rabbit.Opener(ctx, target, cfg.Logger, cfg.Name)
}

// openEventHubs opens "Endpoint=sb://…" connection strings and
// eventhubs:// URLs (see eventhubs.OpenTarget).
func openEventHubs(ctx context.Context, target string, cfg OpenConfig) (broker.Broker, error) {
	return eventhubs.OpenTarget(ctx, target, cfg.Logger, cfg.Name)
}
