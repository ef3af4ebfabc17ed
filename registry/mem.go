package registry

import (
	"fmt"
	"log/slog"
	"net/url"
	"strconv"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
)

// memOptions turns mem:// query parameters into mem options, refusing any
// parameter it does not know.
func memOptions(q url.Values) ([]mem.Option, error) {
	var opts []mem.Option
	for k, vs := range q {
		v := vs[len(vs)-1]
		n, err := strconv.Atoi(v)
		switch {
		case k != "capacity" && k != "max_message_size":
			return nil, fmt.Errorf("%w: unknown mem URL parameter %q (known: capacity, max_message_size)", broker.ErrInvalidOption, k)
		case err != nil || n < 1:
			return nil, fmt.Errorf("%w: mem URL parameter %s=%q, want a positive integer", broker.ErrInvalidOption, k, v)
		case k == "capacity":
			opts = append(opts, mem.WithQueueCapacity(n))
		default:
			opts = append(opts, mem.WithMaxMessageSize(n))
		}
	}
	return opts, nil
}

func newMem(name string, logger *slog.Logger, opts ...mem.Option) (broker.Broker, error) {
	opts = append(opts, mem.WithName(name), mem.WithLogger(logger))
	return mem.New(opts...)
}
