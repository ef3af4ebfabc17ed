package registry_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/mem"
	"github.com/isobroker/broker/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSameURLTwiceGivesIsolatedBrokers(t *testing.T) {
	ctx := context.Background()
	r := registry.New()
	a, err := r.Open(ctx, "mem://shared")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Open(ctx, "mem://shared")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	got := make(chan string, 10)
	if _, err := b.Subscribe(ctx, "t", func(_ context.Context, d *broker.Delivery) error { got <- d.ID; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "t", &broker.Message{ID: "from-a"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "t", &broker.Message{ID: "from-b"}); err != nil {
		t.Fatalf("publish on b after closing a: %v", err)
	}
	select {
	case id := <-got:
		if id != "from-b" {
			t.Fatalf("b received %q: the two instances share state", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b received nothing")
	}
}

func TestNamedInstances(t *testing.T) {
	ctx := context.Background()
	r := registry.New()
	if _, err := r.OpenNamed(ctx, "orders", "mem://orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.OpenNamed(ctx, "audit", "mem://?capacity=8"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.OpenNamed(ctx, "orders", "mem://"); !errors.Is(err, registry.ErrNameInUse) {
		t.Errorf("reusing a held name = %v, want ErrNameInUse", err)
	}
	if got := strings.Join(r.Names(), ","); got != "audit,orders" {
		t.Errorf("Names = %q", got)
	}
	orders, ok := r.Get("orders")
	if !ok || orders == nil {
		t.Fatal("Get(orders) found nothing")
	}
	if err := r.Close(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if orders.State() != broker.StateClosed {
		t.Errorf("closed instance state = %v", orders.State())
	}
	if _, ok := r.Get("orders"); ok {
		t.Errorf("Get after Close still finds the instance")
	}
	if err := r.Close(ctx, "orders"); !errors.Is(err, registry.ErrNoSuchName) {
		t.Errorf("second Close = %v, want ErrNoSuchName", err)
	}
	audit, _ := r.Get("audit")
	if err := audit.Publish(ctx, "t", &broker.Message{}); err != nil {
		t.Errorf("closing one named instance broke another: %v", err)
	}
	if _, err := r.OpenNamed(ctx, "orders", "mem://"); err != nil {
		t.Errorf("reopening a released name: %v", err)
	}
	if err := r.CloseAll(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.Names()) != 0 || audit.State() != broker.StateClosed {
		t.Errorf("CloseAll left %v, audit %v", r.Names(), audit.State())
	}
}

func TestConcurrentOpenNamedOneWins(t *testing.T) {
	r := registry.New()
	defer r.CloseAll(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 16 {
		wg.Go(func() {
			if _, err := r.OpenNamed(context.Background(), "x", "mem://"); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent OpenNamed calls won the same name, want 1", wins)
	}
}

func TestBadTargets(t *testing.T) {
	r := registry.New()
	cases := []struct {
		target string
		want   error
		names  string // the error must mention this
	}{
		{"", broker.ErrInvalidOption, "empty"},
		{"not a url", broker.ErrInvalidOption, "neither a URL"},
		{"kafka://broker:9092", registry.ErrUnknownScheme, `"kafka"`},
		{"amqp://user:hunter2@rabbit:5672/%zz", broker.ErrInvalidOption, "amqp://user:***@rabbit"},
		{"mem://x?bogus=1", broker.ErrInvalidOption, `"bogus"`},
		{"mem://x?capacity=zero", broker.ErrInvalidOption, "capacity"},
		{"mem://x/some/path", broker.ErrInvalidOption, "path"},
		{"m em://x", broker.ErrInvalidOption, "scheme"},
		{"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=hunter2;Bogus", broker.ErrInvalidOption, "SharedAccessKey=***"},
		{"eventhubs://k:hunter2@", broker.ErrInvalidOption, "eventhubs://k:***@"},
	}
	for _, c := range cases {
		b, err := r.Open(context.Background(), c.target)
		if b != nil {
			b.Close(context.Background())
		}
		if !errors.Is(err, c.want) {
			t.Errorf("Open(%q) = %v, want %v", c.target, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.names) {
			t.Errorf("Open(%q) error %q does not name %q", c.target, err, c.names)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error leaks the secret: %q", c.target, err)
		}
	}
	if err := r.Register("bad:scheme", nil); !errors.Is(err, broker.ErrInvalidOption) {
		t.Errorf("Register with a bad scheme = %v", err)
	}
}

// A broker whose Close is held up by a hung handler delays neither the
// other instances' Close in CloseAll nor CloseAll beyond its ctx.
func TestCloseAllIsBoundedAndLocal(t *testing.T) {
	ctx := context.Background()
	r := registry.New()
	stuck, err := r.OpenNamed(ctx, "stuck", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	healthy, err := r.OpenNamed(ctx, "healthy", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	if _, err := stuck.Subscribe(ctx, "t", func(context.Context, *broker.Delivery) error {
		close(started)
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := stuck.Publish(ctx, "t", &broker.Message{}); err != nil {
		t.Fatal(err)
	}
	<-started
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = r.CloseAll(cctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"stuck"`) {
		t.Errorf("CloseAll = %v, want the stuck instance's deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("CloseAll took %v with a 200ms ctx", d)
	}
	if healthy.State() != broker.StateClosed {
		t.Errorf("healthy instance not closed: %v", healthy.State())
	}
}

func TestRegisterCustomScheme(t *testing.T) {
	r := registry.New()
	var gotName string
	err := r.Register("test", func(ctx context.Context, target string, cfg registry.OpenConfig) (broker.Broker, error) {
		gotName = cfg.Name
		return mem.New(mem.WithName(cfg.Name), mem.WithLogger(cfg.Logger))
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.OpenNamed(context.Background(), "custom", "TEST://anything")
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseAll(context.Background())
	if gotName != "custom" || b == nil {
		t.Errorf("opener got name %q", gotName)
	}
	if s := strings.Join(r.Schemes(), ","); !strings.Contains(s, "test") || !strings.Contains(s, "mem") {
		t.Errorf("Schemes = %q", s)
	}
}
