// Package e2e holds tests that cross adapters: a path through a real
// RabbitMQ node and the Event Hubs emulator in one test. It has no code of
// its own.
package e2e
