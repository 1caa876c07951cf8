package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// failuresToMove is how many failed attempts in a row, with no success in
// between, make the agent leave an endpoint that answers (5xx, 429). A
// single retryable answer (an aggregator taking the edge back from another
// one answers one 503) never moves it: a healthy endpoint is kept.
const failuresToMove = 3

// parseAggregators splits --aggregator into URLs.
func parseAggregators(s string) ([]*url.URL, error) {
	var out []*url.URL
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%q is not an http:// or https:// URL such as http://aggregator.example:8080", part)
		}
		if len(out) > 0 && u.Scheme != out[0].Scheme {
			return nil, fmt.Errorf("all aggregator URLs must use the same scheme (%s and %s given)", out[0].Scheme, u.Scheme)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("at least one aggregator URL is required")
	}
	return out, nil
}

// target is one endpoint: a configured URL and one address its host
// resolved to.
type target struct {
	url  *url.URL
	addr string // host:port to dial; "" dials the URL's host as it is
}

func (t target) String() string {
	if t.addr == "" || t.addr == t.url.Host {
		return t.url.String()
	}
	return t.url.String() + " (" + t.addr + ")"
}

// endpoints is the list of aggregator endpoints and the one in use. A host
// name that resolves to several addresses counts as several endpoints; names
// are resolved again every time the agent moves on, so that a changed DNS
// answer (the aggregators' cluster growing, shrinking or moving) is seen at
// the next reconnect.
type endpoints struct {
	log     *slog.Logger
	urls    []*url.URL
	resolve func(ctx context.Context, host string) ([]string, error)
	onMove  []func() // called after every move (each HTTP client closes its idle connections)

	mu       sync.Mutex
	list     []target
	cur      int
	gen      uint64 // incremented on every move
	failures int    // consecutive failures on the current endpoint
}

func newEndpoints(log *slog.Logger, urls []*url.URL, resolve func(context.Context, string) ([]string, error)) *endpoints {
	if resolve == nil {
		resolve = net.DefaultResolver.LookupHost
	}
	e := &endpoints{log: log, urls: urls, resolve: resolve}
	e.list = e.expand(context.Background())
	return e
}

// expand resolves every URL's host. A name that does not resolve stays in
// the list as it is (the dial then fails, and the agent moves on).
func (e *endpoints) expand(ctx context.Context) []target {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []target
	for _, u := range e.urls {
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if net.ParseIP(host) != nil {
			out = append(out, target{url: u, addr: net.JoinHostPort(host, port)})
			continue
		}
		addrs, err := e.resolve(ctx, host)
		if err != nil || len(addrs) == 0 {
			out = append(out, target{url: u})
			continue
		}
		for _, a := range addrs {
			out = append(out, target{url: u, addr: net.JoinHostPort(a, port)})
		}
	}
	return out
}

// current returns the endpoint in use and its generation.
func (e *endpoints) current() (target, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.list[e.cur], e.gen
}

// currentURL returns the base URL of the endpoint in use.
func (e *endpoints) currentURL() *url.URL {
	t, _ := e.current()
	return t.url
}

// ok records a successful exchange with generation gen.
func (e *endpoints) ok(gen uint64) {
	e.mu.Lock()
	if gen == e.gen {
		e.failures = 0
	}
	e.mu.Unlock()
}

// failed records a failed exchange with generation gen. unreachable means
// no answer at all; then the agent moves at once, else after
// failuresToMove failures in a row.
func (e *endpoints) failed(gen uint64, unreachable bool, reason string) {
	e.mu.Lock()
	if gen != e.gen {
		e.mu.Unlock()
		return // moved already
	}
	e.failures++
	if !unreachable && e.failures < failuresToMove {
		e.mu.Unlock()
		return
	}
	from := e.list[e.cur]
	e.mu.Unlock()

	fresh := e.expand(context.Background())

	e.mu.Lock()
	if gen != e.gen {
		e.mu.Unlock()
		return
	}
	// Continue after the failed endpoint in the new list.
	next := 0
	for i, t := range fresh {
		if t.url.String() == from.url.String() && t.addr == from.addr {
			next = (i + 1) % len(fresh)
			break
		}
	}
	e.list, e.cur, e.failures = fresh, next, 0
	e.gen++
	to := e.list[e.cur]
	onMove := e.onMove
	e.mu.Unlock()
	if len(fresh) > 1 || to.addr != from.addr {
		e.log.Warn("moving to the next aggregator endpoint", slog.String("from", from.String()),
			slog.String("to", to.String()), slog.String("reason", reason))
	}
	for _, f := range onMove {
		f()
	}
}

// dialAddr maps the address the HTTP transport dials (the URL's host:port)
// to the resolved address of the endpoint in use.
func (e *endpoints) dialAddr(addr string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.list[e.cur]
	hostport := t.url.Host
	if t.url.Port() == "" {
		hostport = net.JoinHostPort(t.url.Hostname(), map[string]string{"http": "80", "https": "443"}[t.url.Scheme])
	}
	if t.addr != "" && addr == hostport {
		return t.addr
	}
	return addr
}
