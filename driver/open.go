package driver

import (
	"log/slog"

	"github.com/isobroker/broker"
)

// OpenConfig carries a registry's settings to an adapter's Opener, whose
// signature every adapter shares:
//
//	func Opener(ctx context.Context, target string, oc driver.OpenConfig) (broker.Broker, error)
//
// so that registry.Registry.Register takes it directly (registry.OpenConfig
// is this type).
type OpenConfig struct {
	// Name names the instance in logs ("" for unnamed instances).
	Name string
	// Logger receives the instance's logs. The registry never passes nil;
	// an Opener called otherwise treats nil as slog.Default().
	Logger *slog.Logger
	// Telemetry turns on the instance's traces, metrics and trace-context
	// propagation (the zero value: none).
	Telemetry broker.Telemetry
}
