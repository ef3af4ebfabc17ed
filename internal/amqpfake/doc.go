// Package amqpfake is a small, scripted AMQP 0-9-1 server on loopback TCP.
//
// Tests use it to reproduce, deterministically, publisher-confirm and
// mandatory-return sequences that a real RabbitMQ produces only by chance:
// out-of-order nacks, multiple acks spanning a nack, returns interleaved with
// confirms, channels or connections closed by the broker while confirms are
// outstanding, and abrupt socket loss.
//
// [Start] opens a listener; a client dials [Server.URL]. The server performs
// the connection handshake and answers the topology methods a publisher sends
// (channel.open, confirm.select, exchange/queue declare and bind, basic.qos,
// close handshakes, ...) by itself. Everything the test wants to control is
// left to the script: [Server.Accept] hands out each handshaken connection as
// a [Conn], [Conn.NextPublish] returns each fully assembled basic.publish with
// the delivery tag the server assigned to it, and [Conn.Ack], [Conn.Nack],
// [Conn.Return], [Conn.CloseChannel], [Conn.CloseConnection] and [Conn.Drop]
// send exactly what the test asks for, in the order it asks for it.
//
// The server never confirms or returns anything on its own, and it does not
// route or deliver messages: it only records publishes.
//
// When the client violates the protocol (a method interrupting a content
// body, a frame on a channel that is not open, a method the fake does not
// implement, ...) the server closes the connection with the AMQP reply code
// RabbitMQ would use, and [Conn.Err] and [Conn.NextPublish] report why.
package amqpfake

// constError is an error whose value is a constant, so that the package has
// no mutable package-level state even for its sentinel errors.
type constError string

func (e constError) Error() string { return string(e) }

// ErrClosed is returned (possibly wrapped, with the cause) once a server or a
// connection has stopped: [Server.Accept] after [Server.Close], and
// [Conn.NextPublish], [Conn.Err] and the send methods of [Conn] once the
// connection has ended. Test with errors.Is.
const ErrClosed = constError("amqpfake: closed")
