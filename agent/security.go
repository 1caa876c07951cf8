package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/secfile"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// certURIPrefix is the URI SAN naming an edge in a client certificate (the
// aggregator's CertURIPrefix).
const certURIPrefix = "edgemirror://edge/"

// credentials is how the agent proves its identity to the aggregator: a
// client certificate and/or a bearer token, both re-read on SIGHUP.
type credentials struct {
	cfg   *Config
	log   *slog.Logger
	cert  atomic.Pointer[tls.Certificate]
	token atomic.Pointer[string]
	roots *x509.CertPool
}

func newCredentials(cfg *Config, log *slog.Logger) (*credentials, error) {
	c := &credentials{cfg: cfg, log: log}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", cfg.TLSCA)
		}
	}
	if err := c.loadCert(); err != nil {
		return nil, err
	}
	if err := c.loadToken(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *credentials) loadCert() error {
	if c.cfg.TLSCert == "" {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(c.cfg.TLSCert, c.cfg.TLSKey)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	if id := certEdgeID(leaf); id != c.cfg.EdgeID {
		return fmt.Errorf("--tls-cert %s names edge %q, but --edge-id is %q; the aggregator would refuse it", c.cfg.TLSCert, id, c.cfg.EdgeID)
	}
	if time.Now().After(leaf.NotAfter) {
		c.log.Error("client certificate has expired; the aggregator will refuse it", slog.String("file", c.cfg.TLSCert),
			slog.Time("not_after", leaf.NotAfter))
	}
	pair.Leaf = leaf
	c.cert.Store(&pair)
	return nil
}

func (c *credentials) loadToken() error {
	if c.cfg.TokenFile == "" {
		return nil
	}
	tok, err := secfile.ReadLine(c.cfg.TokenFile, "--token-file")
	if err != nil {
		return err
	}
	c.token.Store(&tok)
	return nil
}

// reload re-reads the token and the client certificate; a file that fails
// is logged and the old credential kept.
func (c *credentials) reload() {
	if c.cfg.TokenFile != "" {
		if err := c.loadToken(); err != nil {
			c.log.Error("reload: keeping the old token", slog.Any("error", err))
		} else {
			c.log.Info("reload: token re-read", slog.String("file", c.cfg.TokenFile))
		}
	}
	if c.cfg.TLSCert != "" {
		if err := c.loadCert(); err != nil {
			c.log.Error("reload: keeping the old client certificate", slog.Any("error", err))
		} else {
			c.log.Info("reload: client certificate re-read", slog.String("file", c.cfg.TLSCert))
		}
	}
}

// tlsConfig is the client TLS configuration towards an https:// aggregator.
// The server name is always verified.
// tlsConfig leaves ServerName empty: the HTTP transport then verifies the
// certificate against the host of each request's URL, which follows the
// --aggregator endpoint in use.
func (c *credentials) tlsConfig() *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.roots}
	if c.cfg.TLSCert != "" {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.cert.Load(), nil
		}
	}
	return tc
}

// bearer adds the agent's token to every request towards the aggregator.
type bearer struct {
	rt    http.RoundTripper
	token *atomic.Pointer[string]
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	tok := b.token.Load()
	if tok == nil || req.Header.Get("Authorization") != "" {
		return b.rt.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+*tok)
	return b.rt.RoundTrip(req)
}

func (b *bearer) CloseIdleConnections() {
	if ci, ok := b.rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// secure sets the client's TLS configuration and token.
func (c *credentials) secure(hc *http.Client, scheme string) {
	if tr, ok := hc.Transport.(*http.Transport); ok && scheme == "https" {
		tr.TLSClientConfig = c.tlsConfig()
	}
	if c.cfg.TokenFile != "" {
		hc.Transport = &bearer{rt: hc.Transport, token: &c.token}
	}
}

func certEdgeID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(u.String(), certURIPrefix); ok {
			if s, err := url.PathUnescape(id); err == nil {
				return s
			}
		}
	}
	return c.Subject.CommonName
}

// Reload re-reads the token file and the client certificate (on SIGHUP).
func (a *Agent) Reload() { a.creds.reload() }

// CheckConnect connects to every edge broker and asks the aggregator where
// to resume, with the configured credentials; it returns the first problem
// as one line.
func (a *Agent) CheckConnect(ctx context.Context) error {
	if err := kafkaconn.Check(ctx, "edge", a.cfg.Brokers, a.cfg.Kafka); err != nil {
		return err
	}
	urls, err := parseAggregators(a.cfg.Aggregator)
	if err != nil {
		return fmt.Errorf("--aggregator: %w", err)
	}
	// Every endpoint, every address a name resolves to.
	eps := newEndpoints(a.log, urls, a.cfg.resolver)
	for _, t := range eps.list {
		if err := a.checkEndpoint(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// checkEndpoint asks one aggregator endpoint where to resume.
func (a *Agent) checkEndpoint(ctx context.Context, t target) error {
	one := &endpoints{log: a.log, urls: []*url.URL{t.url}, list: []target{t}}
	hc := newHTTPClient(ctx, one, nil, newMetrics())
	defer hc.CloseIdleConnections()
	a.creds.secure(hc, t.url.Scheme)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	name := t.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url.JoinPath(wire.PathResume).String(), nil)
	if err != nil {
		return fmt.Errorf("aggregator %s: %w", name, err)
	}
	req.Header.Set(wire.HeaderEdge, a.cfg.EdgeID)
	req.Header.Set(wire.HeaderEpoch, "0")
	resp, err := hc.Do(req)
	if err != nil {
		var unknownCA x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		switch {
		case errors.As(err, &unknownCA):
			return fmt.Errorf("aggregator %s: its certificate is not signed by a trusted CA (set --tls-ca to the aggregator's CA): %w", name, err)
		case errors.As(err, &hostErr):
			return fmt.Errorf("aggregator %s: its certificate is not valid for the host of --aggregator: %w", name, err)
		}
		return fmt.Errorf("aggregator %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var er wire.ErrorResponse
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(body, &er) != nil || er.Error == "" {
		er.Error = http.StatusText(resp.StatusCode)
	}
	return fmt.Errorf("aggregator %s refused edge %s: %s: %s", name, a.cfg.EdgeID, strconv.Itoa(resp.StatusCode), er.Error)
}
