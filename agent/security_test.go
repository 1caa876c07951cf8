package agent

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// The token goes on every request, and SIGHUP's reload swaps it; a broken
// token file keeps the old one.
func TestBearerTokenAndReload(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("  first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.EdgeID, cfg.TokenFile = "e1", tokenFile
	creds, err := newCredentials(&cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(srv.URL)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	creds.secure(hc, base.Scheme)
	get := func() {
		t.Helper()
		resp, err := hc.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	if err := os.WriteFile(tokenFile, []byte("second-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get() // not re-read before a reload
	creds.reload()
	get()
	if err := os.WriteFile(tokenFile, []byte(""), 0o600); err != nil {
		t.Fatal(err)
	}
	creds.reload()
	get()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Bearer first-token", "Bearer first-token", "Bearer second-token", "Bearer second-token"}
	if len(seen) != len(want) {
		t.Fatalf("saw %v", seen)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("request %d carried %q, want %q", i, seen[i], want[i])
		}
	}
}
