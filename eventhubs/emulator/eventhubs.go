package emulator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/isobroker/broker/internal/amqp10"
)

// Event Hubs wire names.
const (
	annSequenceNumber = "x-opt-sequence-number"
	annOffset         = "x-opt-offset"
	annEnqueuedTime   = "x-opt-enqueued-time"
	annPartitionKey   = "x-opt-partition-key"
	propEpoch         = "com.microsoft:epoch"
	propReceiverName  = "com.microsoft:receiver-name"
	// capRuntimeMetric, desired by a receiver (the JavaScript SDK's
	// trackLastEnqueuedEventProperties, .NET's TrackLastEnqueuedEventProperties),
	// makes the service offer it back and put the partition's
	// last-enqueued values into every event's delivery annotations.
	capRuntimeMetric      = "com.microsoft:enable-receiver-runtime-metric"
	annLastSequenceNumber = "last_enqueued_sequence_number"
	annLastOffset         = "last_enqueued_offset"
	annLastEnqueuedTime   = "last_enqueued_time_utc"
	annRuntimeRetrievedAt = "runtime_info_retrieval_time_utc"
	selectorFilterKey     = "apache.org:selector-filter:string"
	selectorFilterCode    = uint64(0x0000468C00000004)
	sasTokenType          = "servicebus.windows.net:sastoken"
	sasPrefix             = "SharedAccessSignature "
)

// errUnauthorized wraps every token validation failure.
var errUnauthorized = errors.New("unauthorized")

// normalizeAddress strips an amqp(s)://host/ prefix and surrounding slashes.
func normalizeAddress(a string) string {
	if i := strings.Index(a, "://"); i >= 0 {
		rest := a[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			a = rest[j+1:]
		} else {
			a = ""
		}
	}
	return strings.Trim(a, "/")
}

// resourcePath reduces an audience or SAS resource URI to its lower-case
// path, ignoring scheme and host (the emulator answers on any address).
func resourcePath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
		if j := strings.IndexByte(u, '/'); j >= 0 {
			u = u[j+1:]
		} else {
			u = ""
		}
	} else if j := strings.IndexByte(u, '/'); j >= 0 && strings.ContainsAny(u[:j], ".:") {
		u = u[j+1:] // host/path without scheme
	}
	return strings.ToLower(strings.Trim(u, "/"))
}

// covers reports whether a claim for path grants access to target.
func covers(path, target string) bool {
	return path == "" || target == path || strings.HasPrefix(target, path+"/")
}

func isManagement(addr string) bool {
	a := strings.ToLower(addr)
	return a == "$management" || strings.HasSuffix(a, "/$management")
}

func (c *conn) tracking() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("TrackingId:%s_G%d, SystemTracker:%s:eventhub, Timestamp:%s",
		hex.EncodeToString(b[:]), c.id, c.e.cfg.Namespace, time.Now().UTC().Format("2006-01-02T15:04:05"))
}

func (c *conn) trackedDescription(s string) string { return s + " " + c.tracking() }

func (c *conn) notFound(what string) (string, string) {
	return CondNotFound, c.trackedDescription(fmt.Sprintf(
		"The messaging entity 'sb://%s/%s' could not be found.", c.e.cfg.Namespace, what))
}

// authorized reports whether the connection may use the entity path.
func (c *conn) authorized(entity string) bool {
	if c.e.cfg.AllowAnonymous || c.plainAuth {
		return true
	}
	target := strings.ToLower(entity)
	now := time.Now()
	for _, cl := range c.claims {
		if cl.expiry.After(now) && covers(cl.path, target) {
			return true
		}
	}
	return false
}

func (c *conn) unauthorized(entity, claim string) (string, string) {
	return CondUnauthorizedAccess, c.trackedDescription(fmt.Sprintf(
		"Unauthorized access. '%s' claim(s) are required to perform this operation. Resource: 'sb://%s/%s'.",
		claim, c.e.cfg.Namespace, strings.ToLower(entity)))
}

// setupIncoming resolves the target of a client sender. It returns a
// condition and description when the attach must be refused.
func (c *conn) setupIncoming(l *link, a *amqp10.Attach) (string, string) {
	addr := normalizeAddress(a.Target.Address)
	l.address = addr
	switch {
	case strings.EqualFold(addr, "$cbs"):
		l.kind = kindCBSRequest
		return "", ""
	case isManagement(addr):
		l.kind = kindMgmtRequest
		return "", ""
	}
	parts := strings.Split(addr, "/")
	if addr == "" || !(len(parts) == 1 || len(parts) == 3 && strings.EqualFold(parts[1], "Partitions")) {
		return c.notFound(addr)
	}
	h := c.e.lookupHub(parts[0], true)
	if h == nil {
		return c.notFound(parts[0])
	}
	if len(parts) == 3 {
		if l.part = h.partition(parts[2]); l.part == nil {
			return c.notFound(addr)
		}
	}
	if !c.authorized(addr) {
		return c.unauthorized(addr, "Send")
	}
	if r, ok := c.e.faults.takeRefusal(); ok {
		return r.cond, c.trackedDescription(r.desc)
	}
	l.kind, l.hub = kindEventSender, h
	return "", ""
}

// setupOutgoing resolves the source of a client receiver.
func (c *conn) setupOutgoing(l *link, a *amqp10.Attach) (string, string) {
	addr := normalizeAddress(a.Source.Address)
	l.address = addr
	replyAddr := ""
	if a.Target != nil {
		replyAddr = a.Target.Address
	}
	switch {
	case strings.EqualFold(addr, "$cbs"):
		l.kind, l.replyAddr = kindCBSReply, replyAddr
		return "", ""
	case isManagement(addr):
		l.kind, l.replyAddr = kindMgmtReply, replyAddr
		return "", ""
	}
	parts := strings.Split(addr, "/")
	if len(parts) != 5 || !strings.EqualFold(parts[1], "ConsumerGroups") || !strings.EqualFold(parts[3], "Partitions") {
		return c.notFound(addr)
	}
	h := c.e.lookupHub(parts[0], true)
	if h == nil {
		return c.notFound(parts[0])
	}
	g := h.group(parts[2], c.e.cfg.AutoCreate)
	if g == nil {
		return c.notFound(parts[0] + "/ConsumerGroups/" + parts[2])
	}
	p := h.partition(parts[4])
	if p == nil {
		return c.notFound(addr)
	}
	if !c.authorized(addr) {
		return c.unauthorized(addr, "Listen")
	}
	sp, err := parseSelector(a.Source.Filter)
	if err != nil {
		return CondInvalidField, c.trackedDescription(err.Error())
	}
	epoch, err := epochOf(a.Properties)
	if err != nil {
		return CondInvalidField, c.trackedDescription(err.Error())
	}
	if r, ok := c.e.faults.takeRefusal(); ok {
		return r.cond, c.trackedDescription(r.desc)
	}
	name := a.Name
	if v, ok := a.Properties.GetString(propReceiverName); ok {
		if s, ok := v.(string); ok && s != "" {
			name = s
		}
	}
	reg := &receiverReg{c: c, linkID: l.id, name: name, epoch: epoch}
	rs := g.parts[p.id]
	tracker := fmt.Sprintf("TrackingId:%s, SystemTracker:%s:eventhub:%s~%d|%s, Timestamp:%s",
		strconv.FormatUint(l.id, 16), c.e.cfg.Namespace, h.name, p.id, g.name, time.Now().UTC().Format("2006-01-02T15:04:05"))
	stolen, refused := rs.register(reg, c.e.cfg.MaxNonEpochReceivers, tracker)
	if refused != nil {
		return refused.cond, refused.desc
	}
	for _, o := range stolen {
		desc := fmt.Sprintf("New receiver '%s' with higher epoch of '%s' is created hence current receiver '%s' with epoch '%s' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used. %s",
			name, epochString(epoch), o.name, epochString(o.epoch), tracker)
		id := o.linkID
		o.c.post(func(oc *conn) {
			oc.detachMatching(func(l *link) bool { return l.id == id }, CondLinkStolen, desc)
		})
	}
	l.kind, l.hub, l.rset = kindEventReceiver, h, rs
	l.runtimeMetric = slices.Contains(a.DesiredCapabilities, capRuntimeMetric)
	l.cursor = p.resolve(sp)
	l.subscribe = p
	if c.subs[p]++; c.subs[p] == 1 {
		p.subscribe(c)
	}
	c.log.Debug("event receiver attached", "hub", h.name, "group", g.name, "partition", p.id, "receiver", name,
		"epoch", epochString(epoch), "start_seq", l.cursor)
	return "", ""
}

func epochString(e *int64) string {
	if e == nil {
		return "(none)"
	}
	return strconv.FormatInt(*e, 10)
}

func epochOf(props amqp10.Map) (*int64, error) {
	v, ok := props.GetString(propEpoch)
	if !ok || v == nil {
		return nil, nil
	}
	var e int64
	switch x := v.(type) {
	case int64:
		e = x
	case int32:
		e = int64(x)
	case int16:
		e = int64(x)
	case int8:
		e = int64(x)
	case uint32:
		e = int64(x)
	case uint64:
		e = int64(x)
	default:
		return nil, fmt.Errorf("link property %s must be a long, got %T", propEpoch, v)
	}
	return &e, nil
}

// splitSelector splits a selector expression of the form
// "amqp.annotation.<field> >[=] '<value>'" (field one of x-opt-offset,
// x-opt-sequence-number, x-opt-enqueued-time) into its parts. The result
// is m[1] field, m[2] operator, m[3] value, like a regexp match; nil when
// the expression has another form.
func splitSelector(expr string) []string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(expr), "amqp.annotation.")
	if !ok {
		return nil
	}
	i := strings.IndexAny(rest, " \t>")
	if i < 0 {
		return nil
	}
	field := rest[:i]
	if field != annOffset && field != annSequenceNumber && field != annEnqueuedTime {
		return nil
	}
	rest = strings.TrimLeft(rest[i:], " \t")
	op := ">"
	if strings.HasPrefix(rest, ">=") {
		op = ">="
	} else if !strings.HasPrefix(rest, ">") {
		return nil
	}
	rest = strings.TrimLeft(rest[len(op):], " \t")
	if len(rest) < 2 || rest[0] != '\'' || rest[len(rest)-1] != '\'' || strings.Count(rest, "'") != 2 {
		return nil
	}
	return []string{expr, field, op, rest[1 : len(rest)-1]}
}

// parseSelector reads the start position from a source filter map.
func parseSelector(filter amqp10.Map) (startPosition, error) {
	var expr string
	found := false
	for _, e := range filter {
		d, ok := e.Value.(amqp10.Described)
		if !ok {
			continue
		}
		isSelector := d.Descriptor == selectorFilterCode || d.Descriptor == amqp10.Symbol(selectorFilterKey)
		if k, ok := e.Key.(amqp10.Symbol); ok && string(k) == selectorFilterKey {
			isSelector = true
		}
		if !isSelector {
			continue
		}
		s, ok := d.Value.(string)
		if !ok {
			return startPosition{}, fmt.Errorf("selector filter must hold a string, got %T", d.Value)
		}
		expr, found = s, true
	}
	if !found {
		return startPosition{}, nil // from the beginning
	}
	m := splitSelector(expr)
	if m == nil {
		return startPosition{}, fmt.Errorf("unsupported selector filter expression %q", expr)
	}
	sp := startPosition{inclusive: m[2] == ">="}
	switch m[1] {
	case annOffset:
		sp.field = "offset"
		if m[3] == "@latest" {
			sp.latest = true
			return sp, nil
		}
	case annSequenceNumber:
		sp.field = "seq"
	case annEnqueuedTime:
		sp.field = "time"
	}
	v, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return startPosition{}, fmt.Errorf("selector filter value %q is not an integer", m[3])
	}
	sp.value = v
	if sp.field == "offset" && v == -1 {
		sp.field = "" // earliest
	}
	return sp, nil
}

// ingest stores a complete message from an event sender.
func (c *conn) ingest(l *link, format uint32, payload []byte) *amqp10.Error {
	msg, err := amqp10.UnmarshalMessage(payload)
	if err != nil {
		return newError(CondDecodeError, c.trackedDescription("The message could not be decoded: "+err.Error()))
	}
	var events []*amqp10.Message
	switch format {
	case 0:
		events = []*amqp10.Message{msg}
	case batchFormat:
		if len(msg.Data) == 0 {
			return newError(CondInvalidField, c.trackedDescription("A batch message must hold its events in data sections."))
		}
		for i, d := range msg.Data {
			m, err := amqp10.UnmarshalMessage(d)
			if err != nil {
				return newError(CondDecodeError, c.trackedDescription(fmt.Sprintf("Event %d of the batch could not be decoded: %v", i, err)))
			}
			events = append(events, m)
		}
	default:
		return newError(CondNotImplemented, c.trackedDescription(fmt.Sprintf("Message format 0x%x is not supported.", format)))
	}
	batchKey := partitionKey(msg)
	if batchKey == nil {
		batchKey = partitionKey(events[0])
	}
	p := l.part
	if p == nil {
		p = l.hub.pick(batchKey)
	}
	pending := make([]pendingEvent, len(events))
	for i, m := range events {
		key := partitionKey(m)
		if key == nil {
			key = batchKey
		}
		pending[i] = pendingEvent{key: key, body: func(seq, offset int64, t time.Time) []byte {
			return encodeStored(m, key, seq, offset, t)
		}}
	}
	p.append(pending)
	return nil
}

// runtimeAnnotations encodes the delivery-annotations section the service
// adds to events on a receiver that desired capRuntimeMetric.
func runtimeAnnotations(in partitionInfo, now time.Time) []byte {
	b, err := (&amqp10.Message{DeliveryAnnotations: amqp10.Map{
		{Key: amqp10.Symbol(annLastSequenceNumber), Value: in.last},
		{Key: amqp10.Symbol(annLastOffset), Value: in.lastOffset},
		{Key: amqp10.Symbol(annLastEnqueuedTime), Value: in.lastTime},
		{Key: amqp10.Symbol(annRuntimeRetrievedAt), Value: time.UnixMilli(now.UnixMilli()).UTC()},
	}}).Marshal()
	if err != nil {
		return nil // fixed types that always encode
	}
	return b
}

// withDeliveryAnnotations inserts an encoded delivery-annotations section
// into a stored event, after its header if it has one (stored events carry
// no delivery annotations of their own: encodeStored drops them).
func withDeliveryAnnotations(msg, section []byte) []byte {
	n := 0
	d := amqp10.NewDecoder(msg)
	if v, err := d.ReadValue(); err == nil {
		if dv, ok := v.(amqp10.Described); ok {
			if code, ok := dv.DescriptorCode(); ok && code == amqp10.DescHeader {
				n = d.Offset()
			}
		}
	}
	out := make([]byte, 0, len(msg)+len(section))
	out = append(out, msg[:n]...)
	out = append(out, section...)
	return append(out, msg[n:]...)
}

func partitionKey(m *amqp10.Message) *string {
	v, ok := m.MessageAnnotations.GetString(annPartitionKey)
	if !ok {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return nil
	}
	return &s
}

// encodeStored re-encodes an event as delivered: its own sections,
// delivery annotations dropped, message annotations with the service's
// x-opt-* values.
func encodeStored(m *amqp10.Message, key *string, seq, offset int64, t time.Time) []byte {
	ann := make(amqp10.Map, 0, len(m.MessageAnnotations)+4)
	for _, e := range m.MessageAnnotations {
		switch k := e.Key.(type) {
		case amqp10.Symbol:
			switch string(k) {
			case annSequenceNumber, annOffset, annEnqueuedTime, annPartitionKey:
				continue
			}
		}
		ann = append(ann, e)
	}
	if key != nil {
		ann = append(ann, amqp10.MapEntry{Key: amqp10.Symbol(annPartitionKey), Value: *key})
	}
	ann = append(ann,
		amqp10.MapEntry{Key: amqp10.Symbol(annSequenceNumber), Value: seq},
		amqp10.MapEntry{Key: amqp10.Symbol(annOffset), Value: strconv.FormatInt(offset, 10)},
		amqp10.MapEntry{Key: amqp10.Symbol(annEnqueuedTime), Value: t},
	)
	annBytes, err := (&amqp10.Message{MessageAnnotations: ann}).Marshal()
	if err != nil {
		// Annotation values come from a decoded message and re-encode.
		annBytes = nil
	}
	var out []byte
	inserted := false
	for _, r := range m.Raw {
		switch r.Code {
		case amqp10.DescHeader:
			out = append(out, r.Bytes...)
			continue
		case amqp10.DescDeliveryAnnotations, amqp10.DescMessageAnnotations:
			continue
		}
		if !inserted {
			out = append(out, annBytes...)
			inserted = true
		}
		out = append(out, r.Bytes...)
	}
	if !inserted {
		out = append(out, annBytes...)
	}
	return out
}

// appString reads an application property as a string.
func appString(m *amqp10.Message, key string) (string, bool) {
	v, ok := m.ApplicationProperties.GetString(key)
	if !ok {
		return "", false
	}
	switch s := v.(type) {
	case string:
		return s, true
	case amqp10.Symbol:
		return string(s), true
	}
	return "", false
}

// replyLink finds the reply link of kind for a request's reply-to, as the
// service does: the receiver whose target address is reply-to (go-amqp,
// azeventhubs), else the receiver named reply-to (rhea and @azure/core-amqp,
// whose $cbs receiver has no target address). A request without reply-to
// has no reply link.
func (c *conn) replyLink(kind linkKind, replyTo string) *link {
	if replyTo == "" {
		return nil
	}
	var byName *link
	for _, s := range c.sessions {
		if s.ending {
			continue
		}
		for _, l := range s.links {
			if l.kind != kind || l.detached {
				continue
			}
			if l.replyAddr == replyTo {
				return l
			}
			if byName == nil && l.name == replyTo {
				byName = l
			}
		}
	}
	return byName
}

// reply queues an RPC response on the request's reply link (see replyLink).
func (c *conn) reply(kind linkKind, req *amqp10.Message, status int32, desc string, body any) {
	var replyTo string
	var corr any
	if req.Properties != nil {
		replyTo, corr = req.Properties.ReplyTo, req.Properties.MessageID
	}
	resp := &amqp10.Message{
		Properties: &amqp10.Properties{CorrelationID: corr},
		ApplicationProperties: amqp10.Map{
			{Key: "status-code", Value: status},
			{Key: "status-description", Value: desc},
		},
	}
	if body != nil {
		resp.Value, resp.HasValue = body, true
	}
	b, err := resp.Marshal()
	if err != nil {
		c.log.Error("encoding rpc reply failed", "err", err)
		return
	}
	l := c.replyLink(kind, replyTo)
	if l == nil {
		c.log.Warn("rpc reply has no reply link", "reply_to", replyTo, "status", status)
		return
	}
	if len(l.replies) >= maxReplies {
		c.detachLink(l, CondResourceLimitExceeded, "too many unread replies: the reply link has no credit")
		return
	}
	l.replies = append(l.replies, b)
	c.pump(l)
}

func (c *conn) handleCBS(req *amqp10.Message) {
	op, _ := appString(req, "operation")
	if op != "put-token" {
		c.reply(kindCBSReply, req, 400, fmt.Sprintf("Unsupported $cbs operation %q.", op), nil)
		return
	}
	typ, _ := appString(req, "type")
	audience, _ := appString(req, "name")
	token, _ := req.Value.(string)
	expiry, err := c.e.validateToken(typ, token, audience)
	if err != nil {
		c.log.Info("put-token refused", "audience", audience, "type", typ, "reason", err.Error())
		c.reply(kindCBSReply, req, 401, c.trackedDescription("InvalidSignature: The token has an invalid signature or is not valid for the audience: "+err.Error()), nil)
		return
	}
	c.claims = append(c.claims, claim{path: resourcePath(audience), expiry: expiry})
	if len(c.claims) > 256 {
		c.claims = c.claims[len(c.claims)-256:]
	}
	c.log.Debug("put-token accepted", "audience", audience, "expires", expiry)
	c.reply(kindCBSReply, req, 202, "Accepted", nil)
}

func (c *conn) handleManagement(req *amqp10.Message) {
	op, _ := appString(req, "operation")
	typ, _ := appString(req, "type")
	name, _ := appString(req, "name")
	if op != "READ" {
		c.reply(kindMgmtReply, req, 400, fmt.Sprintf("Unsupported management operation %q.", op), nil)
		return
	}
	if !c.e.cfg.AllowAnonymous && !c.plainAuth {
		token, _ := appString(req, "security_token")
		if _, err := c.e.validateToken("", token, name); err != nil {
			c.reply(kindMgmtReply, req, 401, c.trackedDescription("Unauthorized access: "+err.Error()), nil)
			return
		}
	}
	h := c.e.lookupHub(name, true)
	if h == nil {
		_, desc := c.notFound(name)
		c.reply(kindMgmtReply, req, 404, desc, nil)
		return
	}
	switch typ {
	case "com.microsoft:eventhub":
		ids := make([]string, len(h.partitions))
		for i := range ids {
			ids[i] = strconv.Itoa(i)
		}
		c.reply(kindMgmtReply, req, 200, "OK", amqp10.Map{
			{Key: "name", Value: h.name},
			{Key: "type", Value: typ},
			{Key: "created_at", Value: h.created},
			{Key: "partition_count", Value: int32(len(ids))},
			{Key: "partition_ids", Value: amqp10.StringArray(ids...)},
			{Key: "georeplication_factor", Value: int32(1)},
		})
	case "com.microsoft:partition":
		pid, _ := appString(req, "partition")
		p := h.partition(pid)
		if p == nil {
			_, desc := c.notFound(name + "/Partitions/" + pid)
			c.reply(kindMgmtReply, req, 404, desc, nil)
			return
		}
		in := p.info()
		c.reply(kindMgmtReply, req, 200, "OK", amqp10.Map{
			{Key: "name", Value: h.name},
			{Key: "type", Value: typ},
			{Key: "partition", Value: pid},
			{Key: "begin_sequence_number", Value: in.begin},
			{Key: "last_enqueued_sequence_number", Value: in.last},
			{Key: "last_enqueued_offset", Value: in.lastOffset},
			{Key: "last_enqueued_time_utc", Value: in.lastTime},
			{Key: "is_partition_empty", Value: in.empty},
		})
	default:
		c.reply(kindMgmtReply, req, 400, fmt.Sprintf("Unsupported entity type %q.", typ), nil)
	}
}

// validateToken checks a token for an audience and returns its expiry.
// Errors never contain the token.
func (e *Emulator) validateToken(typ, token, audience string) (time.Time, error) {
	if strings.HasPrefix(token, sasPrefix) && (typ == "" || typ == sasTokenType || typ == "jwt") {
		return e.validateSAS(token, audience)
	}
	if typ == sasTokenType {
		return time.Time{}, fmt.Errorf("%w: malformed shared access signature", errUnauthorized)
	}
	if e.cfg.TokenValidator == nil {
		return time.Time{}, fmt.Errorf("%w: token type %q is not accepted by this emulator", errUnauthorized, typ)
	}
	exp, err := e.cfg.TokenValidator(typ, token, audience)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", errUnauthorized, err)
	}
	return exp, nil
}

// validateSAS checks "SharedAccessSignature sr=..&sig=..&se=..&skn=..".
func (e *Emulator) validateSAS(token, audience string) (time.Time, error) {
	fields := map[string]string{}
	for _, kv := range strings.Split(token[len(sasPrefix):], "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return time.Time{}, fmt.Errorf("%w: malformed shared access signature", errUnauthorized)
		}
		fields[k] = v
	}
	sr, sig, se, skn := fields["sr"], fields["sig"], fields["se"], fields["skn"]
	if sr == "" || sig == "" || se == "" || skn == "" {
		return time.Time{}, fmt.Errorf("%w: shared access signature lacks sr, sig, se or skn", errUnauthorized)
	}
	name, err := url.QueryUnescape(skn)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed key name", errUnauthorized)
	}
	key, ok := e.keys[name]
	if !ok {
		return time.Time{}, fmt.Errorf("%w: unknown shared access key name %q", errUnauthorized, name)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	got, err := url.QueryUnescape(sig)
	if err != nil || !hmac.Equal([]byte(want), []byte(got)) {
		return time.Time{}, fmt.Errorf("%w: signature does not match key %q", errUnauthorized, name)
	}
	secs, err := strconv.ParseInt(se, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed expiry", errUnauthorized)
	}
	expiry := time.Unix(secs, 0)
	if !expiry.After(time.Now()) {
		return time.Time{}, fmt.Errorf("%w: token expired at %s", errUnauthorized, expiry.UTC().Format(time.RFC3339))
	}
	resource, err := url.QueryUnescape(sr)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: malformed resource", errUnauthorized)
	}
	if !covers(resourcePath(resource), resourcePath(audience)) {
		return time.Time{}, fmt.Errorf("%w: token resource %q does not cover audience %q", errUnauthorized, resource, audience)
	}
	return expiry, nil
}

// SASToken builds a shared access signature for resource (for example
// "amqp://127.0.0.1:5672/hub") signed with keyName/key, valid for ttl. It
// is what the Azure SDKs send; tests of other clients can use it for
// put-token.
func SASToken(resource, keyName, key string, ttl time.Duration) string {
	sr := strings.ToLower(url.QueryEscape(resource))
	se := strconv.FormatInt(time.Now().Add(ttl).Unix(), 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return fmt.Sprintf("%ssr=%s&sig=%s&se=%s&skn=%s", sasPrefix, sr, sig, se, url.QueryEscape(keyName))
}
