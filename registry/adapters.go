package registry

import (
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/rabbit"
)

// addBuiltins registers New's schemes: mem, and every adapter's own Opener
// as it is (they share the Opener signature): rabbit.Opener for amqp:// and
// amqps:// URLs, eventhubs.Opener for "Endpoint=sb://…" connection strings
// and eventhubs:// URLs.
func addBuiltins(openers map[string]Opener) {
	openers["mem"] = openMem
	openers["amqp"] = rabbit.Opener
	openers["amqps"] = rabbit.Opener
	openers[ConnectionStringScheme] = eventhubs.Opener
	openers["eventhubs"] = eventhubs.Opener
}
