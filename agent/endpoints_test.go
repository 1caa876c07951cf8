package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestParseAggregators(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  string
	}{
		{"http://a:8080", 1, ""},
		{" http://a:8080 , http://b:8080,", 2, ""},
		{"https://a, https://b:9443", 2, ""},
		{"", 0, "at least one"},
		{" , ", 0, "at least one"},
		{"a:8080", 0, "not an http"},
		{"ftp://a", 0, "not an http"},
		{"http://a,https://b", 0, "same scheme"},
	} {
		got, err := parseAggregators(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != tc.want {
			t.Errorf("%q: %d URLs, %v; want %d", tc.in, len(got), err, tc.want)
		}
	}
}

// fakeDNS answers lookups from a table that a test may change.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]string
	lookups int
}

func (d *fakeDNS) lookup(_ context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if a, ok := d.answers[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func (d *fakeDNS) set(host string, addrs ...string) {
	d.mu.Lock()
	d.answers[host] = addrs
	d.mu.Unlock()
}

func testEndpoints(t *testing.T, spec string, dns *fakeDNS) *endpoints {
	t.Helper()
	urls, err := parseAggregators(spec)
	if err != nil {
		t.Fatal(err)
	}
	return newEndpoints(slog.New(slog.DiscardHandler), urls, dns.lookup)
}

// TestEndpointsNameWithSeveralAddresses: a name resolving to several
// addresses is several endpoints, dialled by address with the URL's host
// kept for the request.
func TestEndpointsNameWithSeveralAddresses(t *testing.T) {
	dns := &fakeDNS{answers: map[string][]string{"aggs.example": {"127.0.0.2", "127.0.0.3"}}}
	e := testEndpoints(t, "http://aggs.example:8080,http://127.0.0.9:9000", dns)
	var seen []string
	for i := 0; i < 4; i++ {
		cur, gen := e.current()
		seen = append(seen, e.dialAddr(cur.url.Host))
		if cur.url.Host != "aggs.example:8080" && cur.url.Host != "127.0.0.9:9000" {
			t.Fatalf("request host %q", cur.url.Host)
		}
		e.failed(gen, true, "refused")
	}
	if got := strings.Join(seen, " "); got != "127.0.0.2:8080 127.0.0.3:8080 127.0.0.9:9000 127.0.0.2:8080" {
		t.Errorf("dialled %s", got)
	}
	if e.dialAddr("other:1") != "other:1" {
		t.Error("an address of no endpoint was rewritten")
	}
}

// TestEndpointsStayOnHealthy: answers with errors move the agent only after
// several in a row; a success in between keeps it; a failure reported for
// an endpoint already left is ignored.
func TestEndpointsStayOnHealthy(t *testing.T) {
	dns := &fakeDNS{answers: map[string][]string{}}
	e := testEndpoints(t, "http://127.0.0.1:1,http://127.0.0.1:2", dns)
	first, gen := e.current()
	for i := 0; i < 10; i++ {
		e.failed(gen, false, "503")
		e.ok(gen)
	}
	if cur, _ := e.current(); cur.addr != first.addr {
		t.Fatalf("moved to %s although every failure was followed by a success", cur)
	}
	for i := 0; i < failuresToMove; i++ {
		e.failed(gen, false, "503")
	}
	cur, gen2 := e.current()
	if cur.addr == first.addr || gen2 == gen {
		t.Fatalf("still on %s after %d failures in a row", cur, failuresToMove)
	}
	e.failed(gen, true, "late failure of the old endpoint") // stale generation
	if now, _ := e.current(); now.addr != cur.addr {
		t.Errorf("a stale failure moved the agent from %s to %s", cur, now)
	}
}

// TestEndpointsResolvedAgainOnMove: a DNS change is seen at the next move.
func TestEndpointsResolvedAgainOnMove(t *testing.T) {
	dns := &fakeDNS{answers: map[string][]string{"aggs.example": {"127.0.0.2"}}}
	e := testEndpoints(t, "http://aggs.example:8080", dns)
	if cur, _ := e.current(); cur.addr != "127.0.0.2:8080" {
		t.Fatalf("first endpoint %s", cur)
	}
	dns.set("aggs.example", "127.0.0.2", "127.0.0.5")
	_, gen := e.current()
	e.failed(gen, true, "refused")
	if cur, _ := e.current(); cur.addr != "127.0.0.5:8080" {
		t.Errorf("after a move: %s, want the newly resolved 127.0.0.5:8080", cur)
	}
	// A name that stops resolving stays in the list as it is.
	dns.set("aggs.example")
	_, gen = e.current()
	e.failed(gen, true, "refused")
	if cur, _ := e.current(); cur.addr != "" || cur.url.Host != "aggs.example:8080" {
		t.Errorf("unresolvable name: %+v", cur)
	}
}
