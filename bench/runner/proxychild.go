package runner

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Latency proxies (scenario 8) are toxiproxy proxies in a child process
// (child.go), so that forwarding every byte twice does not count as the
// clients' CPU. Commands:
//
//	proxy UPSTREAM MS  → ok LISTEN   (forwards LISTEN to UPSTREAM, adding MS milliseconds each way)
//	close LISTEN       → ok
//
// The latency toxic delays every chunk by MS from when it was read, so
// that data keeps flowing while earlier data waits: a long pipe, not a
// narrow one.
const proxyEnv = "ISOBROKER_BENCH_PROXY_CHILD"

func serveProxies(in io.Reader, out io.Writer) error {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxies := map[string]*toxiproxy.Proxy{}
	defer func() {
		for _, p := range proxies {
			p.Stop()
		}
	}()
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "proxy":
			ms, err := strconv.Atoi(f[2])
			if err != nil || ms < 0 {
				fmt.Fprintln(out, "err bad latency", f[2])
				continue
			}
			p, err := startLatencyProxy(srv, len(proxies), f[1], ms)
			if err != nil {
				fmt.Fprintln(out, "err", err)
				continue
			}
			proxies[p.Listen] = p
			fmt.Fprintln(out, "ok", p.Listen)
		case len(f) == 2 && f[0] == "close":
			if p, ok := proxies[f[1]]; ok {
				p.Stop()
				delete(proxies, f[1])
			}
			fmt.Fprintln(out, "ok")
		default:
			fmt.Fprintln(out, "err unknown command")
		}
	}
	return nil
}

func startLatencyProxy(srv *toxiproxy.ApiServer, n int, upstream string, ms int) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(srv, "p"+strconv.Itoa(n), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, err
	}
	if ms == 0 {
		return p, nil
	}
	for _, dir := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":"%s","toxicity":1,"attributes":{"latency":%d}}`, dir, dir, ms)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return p, nil
}

// proxyProc is the parent's handle on the proxy child.
type proxyProc struct {
	mu sync.Mutex
	c  *child
}

func startProxyChild() (*proxyProc, error) {
	c, _, err := startChild(proxyEnv)
	if err != nil {
		return nil, fmt.Errorf("proxy child: %w", err)
	}
	return &proxyProc{c: c}, nil
}

// open starts a proxy to upstream adding ms each way and returns its
// address.
func (p *proxyProc) open(upstream string, ms int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.command(fmt.Sprintf("proxy %s %d", upstream, ms))
}

// close stops the proxy listening on addr and cuts its connections.
func (p *proxyProc) close(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = p.c.command("close " + addr)
}

func (p *proxyProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c.stop()
}
