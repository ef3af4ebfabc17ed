package amqp10

import (
	"fmt"
)

// Body is a frame body: a transport performative or a SASL frame.
type Body interface {
	Marshaler
	// Code returns the descriptor code of the body.
	Code() uint64
}

// Roles of a link endpoint as carried in attach, flow and disposition.
const (
	RoleSender   = false
	RoleReceiver = true
)

// Sender settle modes.
const (
	SndUnsettled uint8 = 0
	SndSettled   uint8 = 1
	SndMixed     uint8 = 2
)

// Receiver settle modes.
const (
	RcvFirst  uint8 = 0
	RcvSecond uint8 = 1
)

// Error conditions used by the emulator and tests.
const (
	ErrCondInternalError          Symbol = "amqp:internal-error"
	ErrCondNotFound               Symbol = "amqp:not-found"
	ErrCondUnauthorizedAccess     Symbol = "amqp:unauthorized-access"
	ErrCondDecodeError            Symbol = "amqp:decode-error"
	ErrCondResourceLimitExceeded  Symbol = "amqp:resource-limit-exceeded"
	ErrCondNotAllowed             Symbol = "amqp:not-allowed"
	ErrCondInvalidField           Symbol = "amqp:invalid-field"
	ErrCondNotImplemented         Symbol = "amqp:not-implemented"
	ErrCondPreconditionFailed     Symbol = "amqp:precondition-failed"
	ErrCondConnectionForced       Symbol = "amqp:connection:forced"
	ErrCondFramingError           Symbol = "amqp:connection:framing-error"
	ErrCondWindowViolation        Symbol = "amqp:session:window-violation"
	ErrCondErrantLink             Symbol = "amqp:session:errant-link"
	ErrCondUnattachedHandle       Symbol = "amqp:session:unattached-handle"
	ErrCondHandleInUse            Symbol = "amqp:session:handle-in-use"
	ErrCondDetachForced           Symbol = "amqp:link:detach-forced"
	ErrCondTransferLimitExceeded  Symbol = "amqp:link:transfer-limit-exceeded"
	ErrCondMessageSizeExceeded    Symbol = "amqp:link:message-size-exceeded"
	ErrCondStolen                 Symbol = "amqp:link:stolen"
	ErrCondRedirect               Symbol = "amqp:link:redirect"
	ErrCondServerBusy             Symbol = "com.microsoft:server-busy"
	ErrCondTimeout                Symbol = "com.microsoft:timeout"
	ErrCondArgumentOutOfRange     Symbol = "com.microsoft:argument-out-of-range"
	ErrCondEntityDisabled         Symbol = "com.microsoft:entity-disabled"
	ErrCondOperationCancelled     Symbol = "com.microsoft:operation-cancelled"
	ErrCondArgumentError          Symbol = "com.microsoft:argument-error"
	ErrCondMessagingEntityMissing Symbol = "com.microsoft:entity-not-found"
)

// Error is the AMQP error type carried by detach, end, close and rejected.
type Error struct {
	Condition   Symbol
	Description string
	Info        Map
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Description == "" {
		return string(e.Condition)
	}
	return fmt.Sprintf("%s: %s", e.Condition, e.Description)
}

// Code returns the descriptor code of error.
func (e *Error) Code() uint64 { return DescError }

// AppendAMQP implements Marshaler.
func (e *Error) AppendAMQP(dst []byte) ([]byte, error) {
	if e == nil {
		return append(dst, TypeNull), nil
	}
	return appendDescribedList(dst, DescError, []any{e.Condition, optString(e.Description), optMap(e.Info)})
}

func errorFromValue(v any) (*Error, error) {
	l, err := describedListOf(v, DescError)
	if err != nil {
		return nil, err
	}
	f := fields{name: "error", l: l}
	e := &Error{Condition: f.symbolAt(0), Description: f.stringAt(1), Info: f.mapAt(2)}
	if e.Condition == "" && f.e == nil {
		return nil, fmt.Errorf("%w: error without condition", ErrInvalid)
	}
	return e, f.err()
}

// Open is the open performative.
type Open struct {
	ContainerID         string
	Hostname            string
	MaxFrameSize        uint32 // default 4294967295
	ChannelMax          uint16 // default 65535
	IdleTimeout         uint32 // milliseconds; 0 = none
	OutgoingLocales     []Symbol
	IncomingLocales     []Symbol
	OfferedCapabilities []Symbol
	DesiredCapabilities []Symbol
	Properties          Map
}

// Code implements Body.
func (*Open) Code() uint64 { return DescOpen }

// AppendAMQP implements Marshaler.
func (o *Open) AppendAMQP(dst []byte) ([]byte, error) {
	var idle any
	if o.IdleTimeout != 0 {
		idle = o.IdleTimeout
	}
	return appendDescribedList(dst, DescOpen, []any{
		o.ContainerID, optString(o.Hostname), o.MaxFrameSize, o.ChannelMax, idle,
		optSymbols(o.OutgoingLocales), optSymbols(o.IncomingLocales),
		optSymbols(o.OfferedCapabilities), optSymbols(o.DesiredCapabilities), optMap(o.Properties),
	})
}

func decodeOpen(l List) (*Open, error) {
	f := fields{name: "open", l: l}
	o := &Open{
		ContainerID:         f.stringAt(0),
		Hostname:            f.stringAt(1),
		MaxFrameSize:        4294967295,
		ChannelMax:          f.uint16At(3, 65535),
		OutgoingLocales:     f.symbolsAt(5),
		IncomingLocales:     f.symbolsAt(6),
		OfferedCapabilities: f.symbolsAt(7),
		DesiredCapabilities: f.symbolsAt(8),
		Properties:          f.mapAt(9),
	}
	if v, ok := f.uint32At(2); ok {
		o.MaxFrameSize = v
	}
	if v, ok := f.uint32At(4); ok {
		o.IdleTimeout = v
	}
	if !f.present(0) && f.e == nil {
		return nil, fmt.Errorf("%w: open without container-id", ErrInvalid)
	}
	return o, f.err()
}

// Begin is the begin performative.
type Begin struct {
	RemoteChannel       *uint16
	NextOutgoingID      uint32
	IncomingWindow      uint32
	OutgoingWindow      uint32
	HandleMax           uint32 // default 4294967295
	OfferedCapabilities []Symbol
	DesiredCapabilities []Symbol
	Properties          Map
}

// Code implements Body.
func (*Begin) Code() uint64 { return DescBegin }

// AppendAMQP implements Marshaler.
func (b *Begin) AppendAMQP(dst []byte) ([]byte, error) {
	var rc any
	if b.RemoteChannel != nil {
		rc = *b.RemoteChannel
	}
	return appendDescribedList(dst, DescBegin, []any{
		rc, b.NextOutgoingID, b.IncomingWindow, b.OutgoingWindow, b.HandleMax,
		optSymbols(b.OfferedCapabilities), optSymbols(b.DesiredCapabilities), optMap(b.Properties),
	})
}

func decodeBegin(l List) (*Begin, error) {
	f := fields{name: "begin", l: l}
	b := &Begin{HandleMax: 4294967295}
	if f.present(0) {
		rc := f.uint16At(0, 0)
		b.RemoteChannel = &rc
	}
	b.NextOutgoingID, _ = f.uint32At(1)
	b.IncomingWindow, _ = f.uint32At(2)
	b.OutgoingWindow, _ = f.uint32At(3)
	if v, ok := f.uint32At(4); ok {
		b.HandleMax = v
	}
	b.OfferedCapabilities = f.symbolsAt(5)
	b.DesiredCapabilities = f.symbolsAt(6)
	b.Properties = f.mapAt(7)
	if f.e == nil && (!f.present(1) || !f.present(2) || !f.present(3)) {
		return nil, fmt.Errorf("%w: begin without mandatory fields", ErrInvalid)
	}
	return b, f.err()
}

// Source is the source terminus of a link.
type Source struct {
	Address               string
	Durable               uint32
	ExpiryPolicy          Symbol
	Timeout               uint32
	Dynamic               bool
	DynamicNodeProperties Map
	DistributionMode      Symbol
	Filter                Map
	DefaultOutcome        any
	Outcomes              []Symbol
	Capabilities          []Symbol
}

// AppendAMQP implements Marshaler.
func (s *Source) AppendAMQP(dst []byte) ([]byte, error) {
	if s == nil {
		return append(dst, TypeNull), nil
	}
	return appendDescribedList(dst, DescSource, []any{
		optString(s.Address), optZero(s.Durable), optSymbol(s.ExpiryPolicy), optZero(s.Timeout), optFalse(s.Dynamic),
		optMap(s.DynamicNodeProperties), optSymbol(s.DistributionMode), optMap(s.Filter),
		s.DefaultOutcome, optSymbols(s.Outcomes), optSymbols(s.Capabilities),
	})
}

func decodeSource(v any) (*Source, error) {
	if v == nil {
		return nil, nil
	}
	l, err := describedListOf(v, DescSource)
	if err != nil {
		return nil, err
	}
	f := fields{name: "source", l: l}
	s := &Source{
		Address:               f.stringAt(0),
		ExpiryPolicy:          f.symbolAt(2),
		Dynamic:               f.boolAt(4),
		DynamicNodeProperties: f.mapAt(5),
		DistributionMode:      f.symbolAt(6),
		Filter:                f.mapAt(7),
		DefaultOutcome:        f.get(8),
		Outcomes:              f.symbolsAt(9),
		Capabilities:          f.symbolsAt(10),
	}
	s.Durable, _ = f.uint32At(1)
	s.Timeout, _ = f.uint32At(3)
	return s, f.err()
}

// Target is the target terminus of a link.
type Target struct {
	Address               string
	Durable               uint32
	ExpiryPolicy          Symbol
	Timeout               uint32
	Dynamic               bool
	DynamicNodeProperties Map
	Capabilities          []Symbol
}

// AppendAMQP implements Marshaler.
func (t *Target) AppendAMQP(dst []byte) ([]byte, error) {
	if t == nil {
		return append(dst, TypeNull), nil
	}
	return appendDescribedList(dst, DescTarget, []any{
		optString(t.Address), optZero(t.Durable), optSymbol(t.ExpiryPolicy), optZero(t.Timeout), optFalse(t.Dynamic),
		optMap(t.DynamicNodeProperties), optSymbols(t.Capabilities),
	})
}

func decodeTarget(v any) (*Target, error) {
	if v == nil {
		return nil, nil
	}
	d, ok := v.(Described)
	if ok {
		if c, _ := d.DescriptorCode(); c == DescCoordinator {
			return nil, fmt.Errorf("%w: transaction coordinator targets are not supported", ErrInvalid)
		}
	}
	l, err := describedListOf(v, DescTarget)
	if err != nil {
		return nil, err
	}
	f := fields{name: "target", l: l}
	t := &Target{
		Address:               f.stringAt(0),
		ExpiryPolicy:          f.symbolAt(2),
		Dynamic:               f.boolAt(4),
		DynamicNodeProperties: f.mapAt(5),
		Capabilities:          f.symbolsAt(6),
	}
	t.Durable, _ = f.uint32At(1)
	t.Timeout, _ = f.uint32At(3)
	return t, f.err()
}

// Attach is the attach performative.
type Attach struct {
	Name                 string
	Handle               uint32
	Role                 bool // RoleSender or RoleReceiver
	SndSettleMode        *uint8
	RcvSettleMode        *uint8
	Source               *Source
	Target               *Target
	Unsettled            Map
	IncompleteUnsettled  bool
	InitialDeliveryCount *uint32
	MaxMessageSize       uint64 // 0 = no limit
	OfferedCapabilities  []Symbol
	DesiredCapabilities  []Symbol
	Properties           Map
}

// Code implements Body.
func (*Attach) Code() uint64 { return DescAttach }

// AppendAMQP implements Marshaler.
func (a *Attach) AppendAMQP(dst []byte) ([]byte, error) {
	var mms any
	if a.MaxMessageSize != 0 {
		mms = a.MaxMessageSize
	}
	var src, tgt any
	if a.Source != nil {
		src = a.Source
	}
	if a.Target != nil {
		tgt = a.Target
	}
	return appendDescribedList(dst, DescAttach, []any{
		a.Name, a.Handle, a.Role, optUint8(a.SndSettleMode), optUint8(a.RcvSettleMode),
		src, tgt, optMap(a.Unsettled), optFalse(a.IncompleteUnsettled), optUint32(a.InitialDeliveryCount),
		mms, optSymbols(a.OfferedCapabilities), optSymbols(a.DesiredCapabilities), optMap(a.Properties),
	})
}

func decodeAttach(l List) (*Attach, error) {
	f := fields{name: "attach", l: l}
	a := &Attach{
		Name:                 f.stringAt(0),
		Role:                 f.boolAt(2),
		SndSettleMode:        f.uint8Ptr(3),
		RcvSettleMode:        f.uint8Ptr(4),
		Unsettled:            f.mapAt(7),
		IncompleteUnsettled:  f.boolAt(8),
		InitialDeliveryCount: f.uint32Ptr(9),
		OfferedCapabilities:  f.symbolsAt(11),
		DesiredCapabilities:  f.symbolsAt(12),
		Properties:           f.mapAt(13),
	}
	a.Handle, _ = f.uint32At(1)
	a.MaxMessageSize, _ = f.uint64At(10)
	if f.e != nil {
		return nil, f.e
	}
	if !f.present(0) || !f.present(1) || !f.present(2) {
		return nil, fmt.Errorf("%w: attach without mandatory fields", ErrInvalid)
	}
	var err error
	if a.Source, err = decodeSource(f.get(5)); err != nil {
		return nil, err
	}
	if a.Target, err = decodeTarget(f.get(6)); err != nil {
		return nil, err
	}
	return a, nil
}

// Flow is the flow performative.
type Flow struct {
	NextIncomingID *uint32
	IncomingWindow uint32
	NextOutgoingID uint32
	OutgoingWindow uint32
	Handle         *uint32
	DeliveryCount  *uint32
	LinkCredit     *uint32
	Available      *uint32
	Drain          bool
	Echo           bool
	Properties     Map
}

// Code implements Body.
func (*Flow) Code() uint64 { return DescFlow }

// AppendAMQP implements Marshaler.
func (fl *Flow) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescFlow, []any{
		optUint32(fl.NextIncomingID), fl.IncomingWindow, fl.NextOutgoingID, fl.OutgoingWindow,
		optUint32(fl.Handle), optUint32(fl.DeliveryCount), optUint32(fl.LinkCredit),
		optUint32(fl.Available), optFalse(fl.Drain), optFalse(fl.Echo), optMap(fl.Properties),
	})
}

func decodeFlow(l List) (*Flow, error) {
	f := fields{name: "flow", l: l}
	fl := &Flow{
		NextIncomingID: f.uint32Ptr(0),
		Handle:         f.uint32Ptr(4),
		DeliveryCount:  f.uint32Ptr(5),
		LinkCredit:     f.uint32Ptr(6),
		Available:      f.uint32Ptr(7),
		Drain:          f.boolAt(8),
		Echo:           f.boolAt(9),
		Properties:     f.mapAt(10),
	}
	fl.IncomingWindow, _ = f.uint32At(1)
	fl.NextOutgoingID, _ = f.uint32At(2)
	fl.OutgoingWindow, _ = f.uint32At(3)
	if f.e == nil && (!f.present(1) || !f.present(2) || !f.present(3)) {
		return nil, fmt.Errorf("%w: flow without mandatory fields", ErrInvalid)
	}
	return fl, f.err()
}

// Transfer is the transfer performative. Its payload travels beside it in
// the frame.
type Transfer struct {
	Handle        uint32
	DeliveryID    *uint32
	DeliveryTag   []byte
	MessageFormat *uint32
	Settled       *bool
	More          bool
	RcvSettleMode *uint8
	State         DeliveryState
	Resume        bool
	Aborted       bool
	Batchable     bool
}

// Code implements Body.
func (*Transfer) Code() uint64 { return DescTransfer }

// AppendAMQP implements Marshaler.
func (t *Transfer) AppendAMQP(dst []byte) ([]byte, error) {
	var st any
	if t.State != nil {
		st = t.State
	}
	return appendDescribedList(dst, DescTransfer, []any{
		t.Handle, optUint32(t.DeliveryID), optBinary(t.DeliveryTag), optUint32(t.MessageFormat),
		optBool(t.Settled), optFalse(t.More), optUint8(t.RcvSettleMode), st, optFalse(t.Resume), optFalse(t.Aborted), optFalse(t.Batchable),
	})
}

func decodeTransfer(l List) (*Transfer, error) {
	f := fields{name: "transfer", l: l}
	t := &Transfer{
		DeliveryID:    f.uint32Ptr(1),
		DeliveryTag:   f.binaryAt(2),
		MessageFormat: f.uint32Ptr(3),
		Settled:       f.boolPtr(4),
		More:          f.boolAt(5),
		RcvSettleMode: f.uint8Ptr(6),
		Resume:        f.boolAt(8),
		Aborted:       f.boolAt(9),
		Batchable:     f.boolAt(10),
	}
	t.Handle, _ = f.uint32At(0)
	if f.e != nil {
		return nil, f.e
	}
	if !f.present(0) {
		return nil, fmt.Errorf("%w: transfer without handle", ErrInvalid)
	}
	if f.present(7) {
		st, err := DecodeDeliveryState(f.get(7))
		if err != nil {
			return nil, err
		}
		t.State = st
	}
	return t, nil
}

// Disposition is the disposition performative.
type Disposition struct {
	Role      bool
	First     uint32
	Last      *uint32
	Settled   bool
	State     DeliveryState
	Batchable bool
}

// Code implements Body.
func (*Disposition) Code() uint64 { return DescDisposition }

// AppendAMQP implements Marshaler.
func (d *Disposition) AppendAMQP(dst []byte) ([]byte, error) {
	var st any
	if d.State != nil {
		st = d.State
	}
	return appendDescribedList(dst, DescDisposition, []any{
		d.Role, d.First, optUint32(d.Last), optFalse(d.Settled), st, optFalse(d.Batchable),
	})
}

func decodeDisposition(l List) (*Disposition, error) {
	f := fields{name: "disposition", l: l}
	d := &Disposition{
		Role:      f.boolAt(0),
		Last:      f.uint32Ptr(2),
		Settled:   f.boolAt(3),
		Batchable: f.boolAt(5),
	}
	d.First, _ = f.uint32At(1)
	if f.e != nil {
		return nil, f.e
	}
	if !f.present(0) || !f.present(1) {
		return nil, fmt.Errorf("%w: disposition without mandatory fields", ErrInvalid)
	}
	if f.present(4) {
		st, err := DecodeDeliveryState(f.get(4))
		if err != nil {
			return nil, err
		}
		d.State = st
	}
	return d, nil
}

// Detach is the detach performative.
type Detach struct {
	Handle uint32
	Closed bool
	Error  *Error
}

// Code implements Body.
func (*Detach) Code() uint64 { return DescDetach }

// AppendAMQP implements Marshaler.
func (d *Detach) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescDetach, []any{d.Handle, optFalse(d.Closed), optError(d.Error)})
}

func decodeDetach(l List) (*Detach, error) {
	f := fields{name: "detach", l: l}
	d := &Detach{Closed: f.boolAt(1), Error: f.errorAt(2)}
	d.Handle, _ = f.uint32At(0)
	if f.e == nil && !f.present(0) {
		return nil, fmt.Errorf("%w: detach without handle", ErrInvalid)
	}
	return d, f.err()
}

// End is the end performative.
type End struct{ Error *Error }

// Code implements Body.
func (*End) Code() uint64 { return DescEnd }

// AppendAMQP implements Marshaler.
func (e *End) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescEnd, []any{optError(e.Error)})
}

// Close is the close performative.
type Close struct{ Error *Error }

// Code implements Body.
func (*Close) Code() uint64 { return DescClose }

// AppendAMQP implements Marshaler.
func (c *Close) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescClose, []any{optError(c.Error)})
}

// DeliveryState is an outcome or the received state.
type DeliveryState interface {
	Marshaler
	deliveryState()
}

// Accepted is the accepted outcome.
type Accepted struct{}

// Rejected is the rejected outcome.
type Rejected struct{ Error *Error }

// Released is the released outcome.
type Released struct{}

// Modified is the modified outcome.
type Modified struct {
	DeliveryFailed     bool
	UndeliverableHere  bool
	MessageAnnotations Map
}

// Received is the received delivery state.
type Received struct {
	SectionNumber uint32
	SectionOffset uint64
}

func (*Accepted) deliveryState() {}
func (*Rejected) deliveryState() {}
func (*Released) deliveryState() {}
func (*Modified) deliveryState() {}
func (*Received) deliveryState() {}

// AppendAMQP implements Marshaler.
func (*Accepted) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescAccepted, nil)
}

// AppendAMQP implements Marshaler.
func (r *Rejected) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescRejected, []any{optError(r.Error)})
}

// AppendAMQP implements Marshaler.
func (*Released) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescReleased, nil)
}

// AppendAMQP implements Marshaler.
func (m *Modified) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescModified, []any{optFalse(m.DeliveryFailed), optFalse(m.UndeliverableHere), optMap(m.MessageAnnotations)})
}

// AppendAMQP implements Marshaler.
func (r *Received) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescReceived, []any{r.SectionNumber, r.SectionOffset})
}

// DecodeDeliveryState decodes a delivery state from a decoded value.
func DecodeDeliveryState(v any) (DeliveryState, error) {
	d, ok := v.(Described)
	if !ok {
		return nil, fmt.Errorf("%w: delivery state %T", ErrInvalid, v)
	}
	code, _ := d.DescriptorCode()
	l, err := describedListOf(v, code)
	if err != nil {
		return nil, err
	}
	f := fields{name: "delivery-state", l: l}
	switch code {
	case DescAccepted:
		return &Accepted{}, nil
	case DescRejected:
		r := &Rejected{Error: f.errorAt(0)}
		return r, f.err()
	case DescReleased:
		return &Released{}, nil
	case DescModified:
		m := &Modified{DeliveryFailed: f.boolAt(0), UndeliverableHere: f.boolAt(1), MessageAnnotations: f.mapAt(2)}
		return m, f.err()
	case DescReceived:
		r := &Received{}
		r.SectionNumber, _ = f.uint32At(0)
		r.SectionOffset, _ = f.uint64At(1)
		return r, f.err()
	}
	return nil, fmt.Errorf("%w: unknown delivery state %v", ErrInvalid, d.Descriptor)
}

// SASL outcome codes.
const (
	SASLOk      uint8 = 0
	SASLAuth    uint8 = 1
	SASLSys     uint8 = 2
	SASLSysPerm uint8 = 3
	SASLSysTemp uint8 = 4
)

// SASLMechanisms is the sasl-mechanisms frame.
type SASLMechanisms struct{ Mechanisms []Symbol }

// Code implements Body.
func (*SASLMechanisms) Code() uint64 { return DescSASLMechanisms }

// AppendAMQP implements Marshaler.
func (m *SASLMechanisms) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescSASLMechanisms, []any{SymbolArray(m.Mechanisms...)})
}

// SASLInit is the sasl-init frame.
type SASLInit struct {
	Mechanism       Symbol
	InitialResponse []byte
	Hostname        string
}

// Code implements Body.
func (*SASLInit) Code() uint64 { return DescSASLInit }

// AppendAMQP implements Marshaler.
func (i *SASLInit) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescSASLInit, []any{i.Mechanism, optBinary(i.InitialResponse), optString(i.Hostname)})
}

// SASLChallenge is the sasl-challenge frame.
type SASLChallenge struct{ Challenge []byte }

// Code implements Body.
func (*SASLChallenge) Code() uint64 { return DescSASLChallenge }

// AppendAMQP implements Marshaler.
func (c *SASLChallenge) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescSASLChallenge, []any{mandatoryBinary(c.Challenge)})
}

// SASLResponse is the sasl-response frame.
type SASLResponse struct{ Response []byte }

// Code implements Body.
func (*SASLResponse) Code() uint64 { return DescSASLResponse }

// AppendAMQP implements Marshaler.
func (r *SASLResponse) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescSASLResponse, []any{mandatoryBinary(r.Response)})
}

// mandatoryBinary encodes b as a binary value even when it is nil or
// empty: the challenge and response fields are mandatory, so they must
// not become a null that the list encoding then drops.
func mandatoryBinary(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SASLOutcome is the sasl-outcome frame.
type SASLOutcome struct {
	Result         uint8
	AdditionalData []byte
}

// Code implements Body.
func (*SASLOutcome) Code() uint64 { return DescSASLOutcome }

// AppendAMQP implements Marshaler.
func (o *SASLOutcome) AppendAMQP(dst []byte) ([]byte, error) {
	return appendDescribedList(dst, DescSASLOutcome, []any{o.Result, optBinary(o.AdditionalData)})
}

// DecodeBody decodes a frame body (performative or SASL frame) and returns
// it with the remaining bytes, which are the payload of a transfer.
func DecodeBody(b []byte) (Body, []byte, error) {
	d := NewDecoder(b)
	code, l, err := d.ReadDescribedList()
	if err != nil {
		return nil, nil, err
	}
	rest := d.Rest()
	var body Body
	switch code {
	case DescOpen:
		body, err = decodeOpen(l)
	case DescBegin:
		body, err = decodeBegin(l)
	case DescAttach:
		body, err = decodeAttach(l)
	case DescFlow:
		body, err = decodeFlow(l)
	case DescTransfer:
		body, err = decodeTransfer(l)
	case DescDisposition:
		body, err = decodeDisposition(l)
	case DescDetach:
		body, err = decodeDetach(l)
	case DescEnd:
		f := fields{name: "end", l: l}
		body, err = &End{Error: f.errorAt(0)}, f.err()
	case DescClose:
		f := fields{name: "close", l: l}
		body, err = &Close{Error: f.errorAt(0)}, f.err()
	case DescSASLMechanisms:
		f := fields{name: "sasl-mechanisms", l: l}
		m := &SASLMechanisms{Mechanisms: f.symbolsAt(0)}
		if f.e == nil && len(m.Mechanisms) == 0 {
			f.fail(0, "at least one mechanism")
		}
		body, err = m, f.err()
	case DescSASLInit:
		f := fields{name: "sasl-init", l: l}
		i := &SASLInit{Mechanism: f.symbolAt(0), InitialResponse: f.binaryAt(1), Hostname: f.stringAt(2)}
		if f.e == nil && !f.present(0) {
			f.fail(0, "mechanism")
		}
		body, err = i, f.err()
	case DescSASLChallenge:
		f := fields{name: "sasl-challenge", l: l}
		body, err = &SASLChallenge{Challenge: f.binaryAt(0)}, f.err()
	case DescSASLResponse:
		f := fields{name: "sasl-response", l: l}
		body, err = &SASLResponse{Response: f.binaryAt(0)}, f.err()
	case DescSASLOutcome:
		f := fields{name: "sasl-outcome", l: l}
		o := &SASLOutcome{AdditionalData: f.binaryAt(1)}
		if p := f.uint8Ptr(0); p != nil {
			o.Result = *p
		} else if f.e == nil {
			f.fail(0, "code")
		}
		body, err = o, f.err()
	default:
		return nil, nil, fmt.Errorf("%w: descriptor 0x%x is not a frame body", ErrInvalid, code)
	}
	if err != nil {
		return nil, nil, err
	}
	if code != DescTransfer && len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d bytes after %T", ErrInvalid, len(rest), body)
	}
	return body, rest, nil
}
