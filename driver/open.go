package driver

import "log/slog"

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
}
