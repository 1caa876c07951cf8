// Package kafkaconn builds every kafka-go connection edgemirror opens to a
// Kafka cluster (the agent's edge cluster and the aggregator's hub), with the
// TLS and SASL settings of the --kafka-* flags, and checks a cluster before a
// service starts.
//
// # Basics
//
// Config holds the flags. Transport returns the one long-lived
// kafka.Transport of a cluster: every request the product sends (fetch,
// metadata, ListOffsets, CreateTopics, produce) goes through it, so TLS and
// SASL apply to all of them. Check opens a connection to every bootstrap
// broker and reports the first problem as one line naming the cluster and
// the cause.
//
// # Caveats
//
// kafka-go reports a rejected SASL password, and a plain-text client on a TLS
// listener, as a bare EOF; Check and Explain turn that into the likely
// causes. The Transport never sets Dial: a custom Dial silently drops TLS
// (kafka-go #795). The password is read once, when the Transport is built.
package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/edgemirror/edgemirror/internal/secfile"
)

// SASL mechanisms accepted by --kafka-sasl-mechanism.
const (
	MechanismPlain       = "plain"
	MechanismSCRAMSHA256 = "scram-sha-256"
	MechanismSCRAMSHA512 = "scram-sha-512"
)

// Mechanisms lists the accepted --kafka-sasl-mechanism values ("" is none).
var Mechanisms = []string{"", MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512}

// handshakeTimeout bounds the TLS handshake of Check.
var handshakeTimeout = DialTimeout

// Transport settings shared by every cluster connection.
const (
	// DialTimeout bounds one TCP connect, TLS handshake and SASL exchange.
	DialTimeout = 10 * time.Second
	// IdleTimeout closes pooled connections unused this long.
	IdleTimeout = 5 * time.Minute
	// MetadataTTL refreshes the Transport's metadata cache; kafka-go does not
	// refresh it on NOT_LEADER (kafka-go #1221).
	MetadataTTL = 2 * time.Second
)

// Config is how one cluster is reached: the --kafka-* flags of a command.
type Config struct {
	TLS              bool   // --kafka-tls
	CAFile           string // --kafka-tls-ca: PEM; empty = system roots
	CertFile         string // --kafka-tls-cert: client certificate (PEM)
	KeyFile          string // --kafka-tls-key: its private key (PEM)
	ServerName       string // --kafka-tls-server-name: empty = the broker host
	SASLMechanism    string // --kafka-sasl-mechanism: "", plain, scram-sha-256, scram-sha-512
	SASLUsername     string // --kafka-sasl-username
	SASLPasswordFile string // --kafka-sasl-password-file
}

// Validate checks the combination of flags without reading any file.
func (c Config) Validate() error {
	if !c.TLS {
		for flag, v := range map[string]string{"--kafka-tls-ca": c.CAFile, "--kafka-tls-cert": c.CertFile,
			"--kafka-tls-key": c.KeyFile, "--kafka-tls-server-name": c.ServerName} {
			if v != "" {
				return fmt.Errorf("%s is set but --kafka-tls is not; add --kafka-tls", flag)
			}
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("--kafka-tls-cert and --kafka-tls-key go together")
	}
	switch c.SASLMechanism {
	case "":
		if c.SASLUsername != "" || c.SASLPasswordFile != "" {
			return errors.New("--kafka-sasl-username and --kafka-sasl-password-file need --kafka-sasl-mechanism (plain, scram-sha-256 or scram-sha-512)")
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.SASLUsername == "" {
			return fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-username", c.SASLMechanism)
		}
		if c.SASLPasswordFile == "" {
			return fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-password-file", c.SASLMechanism)
		}
	default:
		return fmt.Errorf("--kafka-sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.SASLMechanism)
	}
	return nil
}

// String describes the security of the connection, without secrets.
func (c Config) String() string {
	var parts []string
	if c.TLS {
		p := "tls"
		if c.CAFile != "" {
			p += " ca=" + c.CAFile
		}
		if c.CertFile != "" {
			p += " cert=" + c.CertFile
		}
		if c.ServerName != "" {
			p += " server-name=" + c.ServerName
		}
		parts = append(parts, p)
	} else {
		parts = append(parts, "plaintext")
	}
	if c.SASLMechanism != "" {
		parts = append(parts, "sasl "+c.SASLMechanism+" user="+c.SASLUsername)
	}
	return strings.Join(parts, ", ")
}

// SecretFiles returns the files holding secrets (key and password), for a
// permission check.
func (c Config) SecretFiles() map[string]string {
	out := map[string]string{}
	if c.KeyFile != "" {
		out["--kafka-tls-key"] = c.KeyFile
	}
	if c.SASLPasswordFile != "" {
		out["--kafka-sasl-password-file"] = c.SASLPasswordFile
	}
	return out
}

// TLSConfig returns the client TLS settings, or nil without --kafka-tls.
func (c Config) TLSConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--kafka-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--kafka-tls-ca %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--kafka-tls-cert/--kafka-tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Mechanism returns the SASL mechanism, reading the password file, or nil
// without --kafka-sasl-mechanism.
func (c Config) Mechanism() (sasl.Mechanism, error) {
	if c.SASLMechanism == "" {
		return nil, nil
	}
	pw, err := secfile.ReadLine(c.SASLPasswordFile, "--kafka-sasl-password-file")
	if err != nil {
		return nil, err
	}
	switch c.SASLMechanism {
	case MechanismPlain:
		return plain.Mechanism{Username: c.SASLUsername, Password: pw}, nil
	case MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		algo := scram.SHA256
		if c.SASLMechanism == MechanismSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, c.SASLUsername, pw)
		if err != nil {
			return nil, fmt.Errorf("--kafka-sasl-mechanism %s: %w", c.SASLMechanism, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("--kafka-sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.SASLMechanism)
}

// Transport returns the long-lived kafka.Transport of one cluster. The
// caller closes it with CloseIdleConnections (kafka-go never does).
func Transport(c Config, clientID string) (*kafka.Transport, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	mech, err := c.Mechanism()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		ClientID:    clientID,
		TLS:         tc,
		SASL:        mech,
		DialTimeout: DialTimeout,
		IdleTimeout: IdleTimeout,
		MetadataTTL: MetadataTTL,
	}, nil
}

// Check connects to every bootstrap broker of a cluster (name is "edge" or
// "hub"), the way the product does: TCP, TLS, SASL, then a metadata request.
// The error, if any, is one line naming the cluster, the broker and the
// likely cause.
func Check(ctx context.Context, name string, brokers []string, c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s Kafka: %w", name, err)
	}
	tc, err := c.TLSConfig()
	if err != nil {
		return fmt.Errorf("%s Kafka: %w", name, err)
	}
	mech, err := c.Mechanism()
	if err != nil {
		return fmt.Errorf("%s Kafka: %w", name, err)
	}
	for _, b := range brokers {
		if err := checkBroker(ctx, b, c, tc, mech); err != nil {
			return fmt.Errorf("%s Kafka broker %s: %w", name, b, err)
		}
	}
	return nil
}

func checkBroker(ctx context.Context, broker string, c Config, tc *tls.Config, mech sasl.Mechanism) error {
	ctx, cancel := context.WithTimeout(ctx, 2*DialTimeout)
	defer cancel()
	// 1. TCP, on its own, so that "unreachable" is not mistaken for a
	// security problem.
	nd := &net.Dialer{Timeout: DialTimeout}
	conn, err := nd.DialContext(ctx, "tcp", broker)
	if err != nil {
		return fmt.Errorf("cannot connect: %v", err)
	}
	// 2. TLS handshake, on its own, for the certificate errors.
	if tc != nil {
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(broker)
			cfg.ServerName = host
		}
		tconn := tls.Client(conn, cfg)
		hctx, hcancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tconn.HandshakeContext(hctx)
		hcancel()
		tconn.Close()
		// A plain-text broker reads the ClientHello as a request size: it
		// closes the connection, or waits for a request that never comes.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
			(errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
			return fmt.Errorf("TLS: no TLS handshake from the broker; is this a plain-text listener? (remove --kafka-tls, or use the TLS port): %v", err)
		}
		if err != nil {
			return Explain(err, c)
		}
	} else {
		conn.Close()
	}
	// 3. The product's own path: Transport (TLS + SASL) and a metadata
	// request, which also shows whether the user may describe the cluster.
	tr := &kafka.Transport{ClientID: "edgemirror-check", TLS: tc, SASL: mech, DialTimeout: DialTimeout, MetadataTTL: MetadataTTL}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(broker), Transport: tr, Timeout: DialTimeout}
	if _, err := cl.Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
		return Explain(err, c)
	}
	return nil
}

// Explain rewrites a connection error with its likely cause. kafka-go shows
// several distinct problems as the same EOF.
func Explain(err error, c Config) error {
	if err == nil {
		return nil
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		recErr    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("TLS: the broker's certificate is not signed by a trusted CA (set --kafka-tls-ca to the cluster's CA): %v", err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("TLS: the broker's certificate is not valid for this name (set --kafka-tls-server-name to a name in it): %v", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("TLS: the broker's certificate is invalid (expired, or not for servers): %v", err)
	case errors.As(err, &recErr):
		return fmt.Errorf("TLS: the broker does not speak TLS on this port (remove --kafka-tls, or use its TLS listener): %v", err)
	case strings.Contains(err.Error(), "remote error: tls: certificate required"),
		strings.Contains(err.Error(), "remote error: tls: bad certificate"),
		strings.Contains(err.Error(), "remote error: tls: unknown certificate authority"),
		strings.Contains(err.Error(), "remote error: tls: expired certificate"):
		// The broker's TLS alert (with TLS 1.3 it comes after the handshake).
		return fmt.Errorf("TLS: the broker refused the client certificate, or that none was sent (set --kafka-tls-cert/--kafka-tls-key to one its CA trusts): %v", err)
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Errorf("SASL %s authentication of user %q failed: wrong user name or password: %v", c.SASLMechanism, c.SASLUsername, err)
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		return fmt.Errorf("SASL: the broker does not enable mechanism %s on this listener: %v", c.SASLMechanism, err)
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.ClusterAuthorizationFailed):
		return fmt.Errorf("authorization: user %q may not describe the cluster (Kafka ACLs): %v", c.SASLUsername, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		switch {
		case c.SASLMechanism != "" && c.TLS:
			return fmt.Errorf("the broker closed the connection during SASL %s authentication: wrong user name or password for %q, or the mechanism is not enabled on this listener: %v",
				c.SASLMechanism, c.SASLUsername, err)
		case c.SASLMechanism != "":
			return fmt.Errorf("the broker closed the connection: wrong user name or password for %q (SASL %s), or the listener needs TLS (--kafka-tls): %v",
				c.SASLUsername, c.SASLMechanism, err)
		case c.TLS:
			return fmt.Errorf("the broker closed the connection: the listener may need SASL (--kafka-sasl-mechanism) or a client certificate (--kafka-tls-cert): %v", err)
		default:
			return fmt.Errorf("the broker closed the connection: the listener may need TLS (--kafka-tls) or SASL (--kafka-sasl-mechanism): %v", err)
		}
	}
	return err
}
