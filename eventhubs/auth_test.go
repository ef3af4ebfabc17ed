package eventhubs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/secrettest"
)

func TestParseConnectionString(t *testing.T) {
	const secret = "S3CRET+key/value="
	ok, err := eventhubs.ParseConnectionString("endpoint=sb://ns.example:5673/;SHAREDACCESSKEYNAME=root;sharedAccessKey=" + secret + ";EntityPath=orders;UseDevelopmentEmulator=TRUE;Unknown=x;")
	if err != nil {
		t.Fatal(err)
	}
	if ok.Namespace != "ns.example:5673" || ok.KeyName != "root" || ok.Key != secret || ok.EventHub != "orders" || !ok.UseDevelopmentEmulator {
		t.Errorf("parsed %+v", ok)
	}
	if s := fmt.Sprintf("%v %s %+v", ok, ok, ok); strings.Contains(s, secret) {
		t.Errorf("formatted config shows the key: %s", s)
	}
	sas, err := eventhubs.ParseConnectionString("Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=k")
	if err != nil || sas.SharedAccessSignature == "" {
		t.Errorf("SAS-only string: %+v, %v", sas, err)
	}

	cases := []struct{ in, names string }{
		{"SharedAccessKeyName=root;SharedAccessKey=" + secret, "Endpoint"},
		{"Endpoint=;SharedAccessKeyName=root;SharedAccessKey=" + secret, "Endpoint"},
		{"Endpoint=sb://ns/;SharedAccessKey=" + secret, "SharedAccessKeyName"},
		{"Endpoint=sb://ns/;SharedAccessKeyName=root", "SharedAccessKey"},
		{"Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=" + secret + ";UseDevelopmentEmulator=maybe", "UseDevelopmentEmulator"},
		{"Endpoint=sb://ns/;SharedAccessKeyName=root;S3CRET-no-equals", "segment 3"},
		{"Endpoint=not a url;SharedAccessKeyName=root;SharedAccessKey=" + secret, "Endpoint"},
		{"", "Endpoint"},
	}
	for _, c := range cases {
		_, err := eventhubs.ParseConnectionString(c.in)
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%q: err = %v, want ErrInvalidOption", c.in, err)
			continue
		}
		if !strings.Contains(err.Error(), c.names) {
			t.Errorf("%q: error %q does not name %s", c.in, err, c.names)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "S3CRET") {
			t.Errorf("%q: error shows the key: %v", c.in, err)
		}
	}
}

// TestWrongKey: a wrong SAS key fails fast with ErrUnauthorized, without
// a retry loop: at Open when the hub is known, at first use otherwise.
func TestWrongKey(t *testing.T) {
	logs := &logBuffer{}
	e := startEmulator(t, emulator.Config{Logger: logs.logger()})
	hub := newHub(t, e, 2)
	const wrong = "V1JPTkdXUk9OR1dST05HV1JPTkdXUk9ORw=="
	cs := strings.Replace(e.ConnectionString(hub), "SharedAccessKey="+e.Key(), "SharedAccessKey="+wrong, 1)
	ours := &logBuffer{}

	start := time.Now()
	_, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), cs, eventhubs.WithLogger(ours.logger()))
	elapsed := time.Since(start)
	if !errors.Is(err, broker.ErrUnauthorized) || broker.IsRetryable(err) {
		t.Fatalf("Open with a wrong key = %v (retryable %v), want fatal ErrUnauthorized", err, broker.IsRetryable(err))
	}
	if elapsed > time.Second {
		t.Errorf("Open with a wrong key took %v", elapsed)
	}
	if n := logs.count("put-token refused"); n != 1 {
		t.Errorf("emulator saw %d refused put-tokens, want 1 (no retry loop)", n)
	}
	t.Logf("wrong key at Open: %v (%v)", err, elapsed)

	// Without EntityPath: Open succeeds, the first use fails fast.
	cs = strings.Replace(e.ConnectionString(""), "SharedAccessKey="+e.Key(), "SharedAccessKey="+wrong, 1)
	b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), cs, eventhubs.WithLogger(ours.logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	start = time.Now()
	err = b.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "x"})
	if !errors.Is(err, broker.ErrUnauthorized) || broker.IsRetryable(err) || time.Since(start) > time.Second {
		t.Errorf("Publish with a wrong key = %v after %v, want a fast fatal ErrUnauthorized", err, time.Since(start))
	}
	_, err = b.Subscribe(ctxT(t, 10*time.Second), hub, func(context.Context, *broker.Delivery) error { return nil })
	if !errors.Is(err, broker.ErrUnauthorized) {
		t.Errorf("Subscribe with a wrong key = %v, want ErrUnauthorized", err)
	}
	var ehErr *eventhubs.Error
	if !errors.As(err, &ehErr) {
		t.Errorf("error %v is not an *eventhubs.Error", err)
	}
	for _, s := range []string{wrong, e.Key()} {
		if strings.Contains(ours.String(), s) || strings.Contains(err.Error(), s) {
			t.Errorf("a key leaked into logs or errors")
		}
	}
}

func TestUnknownHub(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	b := open(t, e, nil)
	err := b.Publish(ctxT(t, 10*time.Second), "no-such-hub", &broker.Message{ID: "x"})
	if !errors.Is(err, broker.ErrNotFound) || broker.IsRetryable(err) {
		t.Errorf("publish to an unknown hub = %v, want fatal ErrNotFound", err)
	}
	_, err = b.Subscribe(ctxT(t, 10*time.Second), "no-such-hub", func(context.Context, *broker.Delivery) error { return nil })
	if !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("subscribe to an unknown hub = %v, want ErrNotFound", err)
	}
	hub := newHub(t, e, 1)
	_, err = b.Subscribe(ctxT(t, 10*time.Second), hub, func(context.Context, *broker.Delivery) error { return nil }, broker.Group("no-such-group"))
	if !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("subscribe with an unknown consumer group = %v, want ErrNotFound", err)
	}
}

// TestSecretsNeverLeak runs a session with debug logging, a SAS
// connection string and failing calls, and greps logs and errors for the
// key and the signatures.
func TestSecretsNeverLeak(t *testing.T) {
	const key = "c2VjcmV0LWtleS1ub2JvZHktc2hvdWxkLXNlZQ=="
	emuLogs := &logBuffer{}
	e := startEmulator(t, emulator.Config{Key: key, Logger: emuLogs.logger()})
	hub := newHub(t, e, 2)
	logs := &logBuffer{}
	var errs []error
	b := open(t, e, logs, eventhubs.WithTokenTTL(2*time.Second))
	got := newSeen()
	sub, err := b.Subscribe(ctxT(t, 10*time.Second), hub, got.handle)
	if err != nil {
		t.Fatal(err)
	}
	errs = append(errs, b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "a"}))
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "token renewed"); { // renewal half way through 2 s
		if time.Now().After(deadline) {
			t.Fatal("no token renewal logged with a 2 s TokenTTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.Faults().CloseConnections("")
	errs = append(errs, b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "b"}))
	got.waitFor(t, 10*time.Second, "events", func() bool { return got.distinct() == 2 })
	_ = sub.Close(context.Background())

	// A ready SAS in the connection string.
	sas := emulator.SASToken("amqp://"+e.Addr()+"/"+hub, e.KeyName(), key, time.Hour)
	cs := fmt.Sprintf("Endpoint=sb://%s/;SharedAccessSignature=%s;EntityPath=%s;UseDevelopmentEmulator=true", e.Addr(), sas, hub)
	b2, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), cs, eventhubs.WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	errs = append(errs, b2.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "c"}))
	errs = append(errs, b2.Publish(ctxT(t, 5*time.Second), "other-hub", &broker.Message{ID: "d"})) // not covered by the SAS
	errs = append(errs, fmt.Errorf("%v %s", b2, b))
	_ = b2.Close(context.Background())

	// Wrong key, URL form and connection string.
	wrong := strings.Replace(e.ConnectionString(hub), key, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==", 1)
	_, err = eventhubs.OpenURL(ctxT(t, 10*time.Second), wrong, eventhubs.WithLogger(logs.logger()), eventhubs.WithName("wrong"))
	errs = append(errs, err)
	_, err = eventhubs.OpenURL(ctxT(t, 10*time.Second), "eventhubs://root:"+url.QueryEscape(key)+"@"+e.Addr()+"/"+hub+"?emulator=maybe", eventhubs.WithLogger(logs.logger()), eventhubs.WithName("bad"))
	errs = append(errs, err)

	sig := sas[strings.Index(sas, "sig=")+4:]
	sig = sig[:strings.Index(sig, "&")]
	unescaped, _ := url.QueryUnescape(sig)
	for _, secret := range []string{key, url.QueryEscape(key), sas, sig, unescaped, "SharedAccessSignature sr="} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("broker log contains a secret (%.12s…)", secret)
		}
		for _, err := range errs {
			if leak, ok := secrettest.Leak(secret, err); ok {
				t.Errorf("an error shows a secret (%.12s…): %s", secret, leak)
			}
		}
		if leak, ok := secrettest.Leak(secret, b, b2); ok {
			t.Errorf("a Broker's rendering shows a secret (%.12s…): %.300s", secret, leak)
		}
	}
}

// fakeAAD is a TokenCredential handing out one token.
type fakeAAD struct{ token string }

func (f fakeAAD) GetToken(ctx context.Context, scope string) (eventhubs.AccessToken, error) {
	if scope != eventhubs.TokenScope {
		return eventhubs.AccessToken{}, fmt.Errorf("scope %q", scope)
	}
	return eventhubs.AccessToken{Token: f.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestAzureADCredential(t *testing.T) {
	const jwt = "eyJhbGciOi.aad-token-secret.sig"
	var audiences []string
	e := startEmulator(t, emulator.Config{TokenValidator: func(typ, token, audience string) (time.Time, error) {
		if (typ != "jwt" && typ != "") || token != jwt { // management requests carry no type
			return time.Time{}, errors.New("bad token")
		}
		audiences = append(audiences, audience)
		return time.Now().Add(time.Hour), nil
	}})
	hub := newHub(t, e, 1)
	logs := &logBuffer{}
	cfg := eventhubs.Config{Namespace: e.Addr(), UseDevelopmentEmulator: true, Credential: fakeAAD{jwt}, Logger: logs.logger()}
	b, err := eventhubs.Open(ctxT(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	got := newSeen()
	if _, err := b.Subscribe(ctxT(t, 10*time.Second), hub, got.handle); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "aad"}); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, 10*time.Second, "event", func() bool { return got.has("aad") })
	if strings.Contains(logs.String(), jwt) {
		t.Errorf("the AAD token appears in the log")
	}
	bad, err := eventhubs.Open(ctxT(t, 10*time.Second), eventhubs.Config{Namespace: e.Addr(), EventHub: hub, UseDevelopmentEmulator: true, Credential: fakeAAD{"wrong"}, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, broker.ErrUnauthorized) {
		t.Errorf("wrong AAD token: %v, %v", bad, err)
	}
}

// TestOpenURL: both target forms, connection string and eventhubs:// URL,
// open a working Broker; malformed URLs are refused as invalid.
func TestOpenURL(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	quiet := slog.New(slog.DiscardHandler)
	for _, target := range []string{
		e.ConnectionString(hub),
		"eventhubs://" + e.KeyName() + ":" + url.QueryEscape(e.Key()) + "@" + e.Addr() + "/" + hub + "?emulator=true",
		"eventhubs://" + e.KeyName() + ":" + url.QueryEscape(e.Key()) + "@" + e.Addr() + "?emulator=true&keepalive=30s&reconnect=eager",
	} {
		b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), target, eventhubs.WithLogger(quiet), eventhubs.WithName("target"))
		if err != nil {
			t.Fatalf("OpenURL: %v", err)
		}
		if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "x"}); err != nil {
			t.Errorf("publish: %v", err)
		}
		if err := b.Close(ctxT(t, 5*time.Second)); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	for _, bad := range []string{
		"eventhubs://" + e.Addr() + "/" + hub,                       // no key
		"eventhubs://root@" + e.Addr() + "/" + hub,                  // no key
		"eventhubs://root:k@" + e.Addr() + "/a/b",                   // two hubs
		"eventhubs://root:k@" + e.Addr() + "/" + hub + "?color=red", // unknown parameter
		"eventhubs://root:k@" + e.Addr() + "?reconnect=sometimes",
		"eventhubs:///hub",
	} {
		if _, err := eventhubs.OpenURL(ctxT(t, 5*time.Second), bad, eventhubs.WithLogger(quiet)); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("OpenURL(%q) = %v, want ErrInvalidOption", bad, err)
		}
	}
}
