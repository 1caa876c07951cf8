package aggregator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgemirror/edgemirror/internal/secfile"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// CertURIPrefix is the URI SAN that names an edge in a client certificate:
// edgemirror://edge/<id>. Without one, the certificate's CN is the id.
const CertURIPrefix = "edgemirror://edge/"

// insecureWarnInterval is how often the aggregator repeats that it accepts
// any edge.
const insecureWarnInterval = 10 * time.Minute

// security holds what SIGHUP reloads: the server certificate, the client CA
// and the edges file. Each is swapped atomically; connections and requests
// under way keep what they started with.
type security struct {
	cfg *Config
	log *slog.Logger

	cert  atomic.Pointer[tls.Certificate]
	pool  atomic.Pointer[x509.CertPool]
	edges atomic.Pointer[edgesFile] // nil: no --edges-file, identity from the header

	// logLimit keeps a flood of refused requests from flooding the log.
	logLimit *rate.Limiter
}

// edgeIDs returns the edges of the current edges file (nil without one):
// the fleet view lists those never seen as never-seen.
func (s *security) edgeIDs() []string {
	if f := s.edges.Load(); f != nil {
		return f.ids()
	}
	return nil
}

// newSecurity loads the certificate, the client CA and the edges file.
func newSecurity(cfg *Config, log *slog.Logger) (*security, error) {
	s := &security{cfg: cfg, log: log, logLimit: rate.NewLimiter(10, 50)}
	if err := s.loadCert(); err != nil {
		return nil, err
	}
	if err := s.loadPool(); err != nil {
		return nil, err
	}
	if err := s.loadEdges(); err != nil {
		return nil, err
	}
	if f := s.edges.Load(); f != nil && f.hasCert() && cfg.ClientCA == "" {
		return nil, &ConfigError{Field: "--edges-file", Value: cfg.EdgesFile,
			Reason: "lists edges with credential cert, which needs --client-ca (and --tls-cert/--tls-key)"}
	}
	return s, nil
}

func (s *security) loadCert() error {
	if s.cfg.TLSCert == "" {
		return nil
	}
	c, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	s.cert.Store(&c)
	return nil
}

func (s *security) loadPool() error {
	if s.cfg.ClientCA == "" {
		return nil
	}
	pem, err := os.ReadFile(s.cfg.ClientCA)
	if err != nil {
		return fmt.Errorf("--client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--client-ca %s: no PEM certificate in it", s.cfg.ClientCA)
	}
	s.pool.Store(pool)
	return nil
}

func (s *security) loadEdges() error {
	if s.cfg.EdgesFile == "" {
		return nil
	}
	b, err := secfile.ReadLimit(s.cfg.EdgesFile, "--edges-file", MaxEdgesFileBytes)
	if err != nil {
		return err
	}
	f, err := parseEdgesFile(b)
	if err != nil {
		return fmt.Errorf("--edges-file %s: %w", s.cfg.EdgesFile, err)
	}
	s.edges.Store(f)
	return nil
}

// reload re-reads every file; one that fails is logged and the old one is
// kept.
func (s *security) reload() {
	if s.cfg.TLSCert != "" {
		if err := s.loadCert(); err != nil {
			s.log.Error("reload: keeping the old server certificate", slog.Any("error", err))
		} else {
			s.log.Info("reload: server certificate loaded", slog.String("file", s.cfg.TLSCert))
		}
	}
	if s.cfg.ClientCA != "" {
		if err := s.loadPool(); err != nil {
			s.log.Error("reload: keeping the old client CA", slog.Any("error", err))
		} else {
			s.log.Info("reload: client CA loaded", slog.String("file", s.cfg.ClientCA))
		}
	}
	if s.cfg.EdgesFile != "" {
		old := s.edges.Load()
		if err := s.loadEdges(); err != nil {
			s.log.Error("reload: keeping the old edges file", slog.Any("error", err))
		} else if f := s.edges.Load(); f.hasCert() && s.cfg.ClientCA == "" {
			s.edges.Store(old)
			s.log.Error("reload: keeping the old edges file: it lists cert edges but --client-ca is not set")
		} else {
			s.log.Info("reload: edges file loaded", slog.String("file", s.cfg.EdgesFile), slog.Int("edges", len(f.byID)))
		}
	}
}

// tlsConfig is the listener's TLS configuration, or nil without --tls-cert.
// Client certificates are required when every edge uses one, and verified
// when given otherwise (token edges connect without one).
func (s *security) tlsConfig() *tls.Config {
	if s.cfg.TLSCert == "" {
		return nil
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
	if s.cfg.ClientCA == "" {
		return base
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: base.NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = s.pool.Load()
			c.ClientAuth = tls.RequireAndVerifyClientCert
			if f := s.edges.Load(); f == nil || len(f.tokens) > 0 {
				c.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

// certEdgeID is the edge a verified client certificate names: its URI SAN
// edgemirror://edge/<id>, else its CN.
func certEdgeID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(u.String(), CertURIPrefix); ok {
			if s, err := url.PathUnescape(id); err == nil {
				return s
			}
		}
	}
	return c.Subject.CommonName
}

type credKey struct{}

// credentialOf returns the edges-file entry a request authenticated as, or
// nil when the aggregator runs without --edges-file.
func credentialOf(r *http.Request) *edgeEntry {
	e, _ := r.Context().Value(credKey{}).(*edgeEntry)
	return e
}

// authenticate finds the edge a request's credential belongs to: a verified
// client certificate of a cert edge, or a bearer token. nil, nil means the
// aggregator has no --edges-file.
func (s *security) authenticate(r *http.Request) (*edgeEntry, string) {
	f := s.edges.Load()
	if f == nil {
		return nil, ""
	}
	var certID string
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		certID = certEdgeID(r.TLS.VerifiedChains[0][0])
		if e := f.byID[certID]; e != nil && e.kind == credCert {
			return e, ""
		}
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, tok, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return nil, "Authorization header is not \"Bearer <token>\""
		}
		if e := f.byToken(strings.TrimSpace(tok)); e != nil {
			return e, ""
		}
		return nil, "unknown bearer token"
	}
	if certID != "" {
		return nil, fmt.Sprintf("client certificate names edge %q, which is not a cert edge in --edges-file", certID)
	}
	return nil, "no credential: send a client certificate or Authorization: Bearer <token>"
}

// remote names a request's origin in logs.
func remote(r *http.Request) slog.Attr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return slog.String("remote", host)
}

// guard wraps the chunk, loss and resume API: total concurrency, the
// credential (401), then the per-edge limits; the request body is read
// under the stall timeout. Health endpoints are not guarded.
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(he *httpError) {
			retryAfterHeader(w, he)
			if r.URL.Path == wire.PathChunks {
				s.m.chunks.WithLabelValues(fmt.Sprint(he.status)).Inc()
			}
			writeJSON(w, he.status, wire.ErrorResponse{Error: he.msg, Permanent: he.permanent()})
		}
		if s.lim != nil {
			done, he := s.lim.enterTotal()
			if he != nil {
				refuse(he)
				return
			}
			defer done()
		}
		edge := r.Header.Get(wire.HeaderEdge)
		if s.sec != nil {
			e, why := s.sec.authenticate(r)
			if why != "" {
				s.lim.refuse(refuseNoCredential)
				if s.sec.logLimit.Allow() {
					s.log.Warn("refused request without a valid credential", remote(r),
						slog.String("path", r.URL.Path), slog.String("claimed_edge", edge), slog.String("reason", why))
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="edgemirror"`)
				refuse(&httpError{status: http.StatusUnauthorized, msg: why})
				return
			}
			if e != nil {
				edge = e.id
				r = r.WithContext(context.WithValue(r.Context(), credKey{}, e))
			}
		}
		if s.lim != nil && wire.ValidEdgeID(edge) == nil {
			done, he := s.lim.enterEdge(edge)
			if he != nil {
				refuse(he)
				return
			}
			defer done()
		}
		if s.cfg.ReadTimeout > 0 && r.Body != nil {
			r.Body = &stallReader{rc: http.NewResponseController(w), body: r.Body, timeout: s.cfg.ReadTimeout, ok: true}
		}
		next.ServeHTTP(w, r)
	})
}

// identityOf is identity() for an authenticated request: the edge id is the
// credential's; a request naming another one is refused with 403.
func (s *server) identityOf(r *http.Request, e *edgeEntry) (string, *httpError) {
	claimed := r.Header.Get(wire.HeaderEdge)
	if claimed != "" && claimed != e.id {
		s.lim.refuse(refuseImpersonate)
		s.log.Warn("refused request naming another edge than its credential", remote(r),
			slog.String("path", r.URL.Path), slog.String("credential_edge", e.id), slog.String("claimed_edge", claimed))
		return "", &httpError{status: http.StatusForbidden,
			msg: fmt.Sprintf("credential of edge %s cannot send as edge %q", e.id, claimed)}
	}
	return e.id, nil
}

// isLoopback reports whether a listen address only accepts local clients.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkExposure refuses a configuration that would let anyone who reaches a
// non-loopback address write to the hub under any edge id.
func (c *Config) checkExposure() error {
	secure := c.EdgesFile != "" && c.TLSCert != ""
	if secure || isLoopback(c.Listen) || c.InsecureAcceptAnyEdge {
		return nil
	}
	missing := []string{}
	if c.EdgesFile == "" {
		missing = append(missing, "--edges-file")
	}
	if c.TLSCert == "" {
		missing = append(missing, "--tls-cert/--tls-key")
	}
	return &ConfigError{Field: "--listen", Value: c.Listen,
		Reason: fmt.Sprintf("%s is reachable from other hosts but %s not set: anyone reaching it could write to the hub as any edge. "+
			"Set them (see docs/security.md), listen on 127.0.0.1, or give --insecure-accept-any-edge", c.Listen, strings.Join(missing, " and "))}
}

// insecureWarning is what the aggregator repeats while it runs without
// authentication or without TLS; empty when it runs with both.
func (c *Config) insecureWarning() string {
	switch {
	case c.EdgesFile == "":
		return "no --edges-file: any client that reaches " + c.Listen + " can send chunks as any edge id"
	case c.TLSCert == "":
		return "no --tls-cert: bearer tokens and records cross the network in plain text"
	}
	return ""
}

var errNoTLSForCA = errors.New("--client-ca needs --tls-cert and --tls-key")
