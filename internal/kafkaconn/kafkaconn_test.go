package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string // "" = valid
	}{
		{"plaintext", Config{}, ""},
		{"tls with ca", Config{TLS: true, CAFile: "ca.pem"}, ""},
		{"sasl scram", Config{TLS: true, SASLMechanism: MechanismSCRAMSHA512, SASLUsername: "u", SASLPasswordFile: "pw"}, ""},
		{"ca without tls", Config{CAFile: "ca.pem"}, "--kafka-tls-ca is set but --kafka-tls is not"},
		{"server name without tls", Config{ServerName: "x"}, "--kafka-tls-server-name"},
		{"cert without key", Config{TLS: true, CertFile: "c.pem"}, "go together"},
		{"user without mechanism", Config{SASLUsername: "u"}, "need --kafka-sasl-mechanism"},
		{"mechanism without user", Config{SASLMechanism: MechanismPlain, SASLPasswordFile: "pw"}, "needs --kafka-sasl-username"},
		{"mechanism without password", Config{SASLMechanism: MechanismPlain, SASLUsername: "u"}, "needs --kafka-sasl-password-file"},
		{"unknown mechanism", Config{SASLMechanism: "gssapi", SASLUsername: "u", SASLPasswordFile: "p"}, "want plain"},
	}
	for _, tc := range cases {
		err := tc.c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

// saslSSLCluster is an in-process broker with a TLS listener and a
// SCRAM-SHA-512 user.
type saslSSLCluster struct {
	addr   string
	ca     *testcerts.CA
	pwFile string
}

func newSASLSSLCluster(t *testing.T) *saslSSLCluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "kafka-ca")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Issue("broker", testcerts.Options{CommonName: "broker", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "mirror", "right-password"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("right-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &saslSSLCluster{addr: c.ListenAddrs()[0], ca: ca, pwFile: pw}
}

func (c *saslSSLCluster) config() Config {
	return Config{TLS: true, CAFile: c.ca.CertFile, SASLMechanism: MechanismSCRAMSHA512, SASLUsername: "mirror", SASLPasswordFile: c.pwFile}
}

func TestCheckAndTransportOverSASLSSL(t *testing.T) {
	c := newSASLSSLCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Check(ctx, "hub", []string{c.addr}, c.config()); err != nil {
		t.Fatalf("check with the right settings: %v", err)
	}
	tr, err := Transport(c.config(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	if tr.TLS == nil || tr.SASL == nil || tr.Dial != nil || tr.MetadataTTL != MetadataTTL {
		t.Fatalf("transport: TLS %v SASL %v Dial set %v MetadataTTL %v", tr.TLS != nil, tr.SASL != nil, tr.Dial != nil, tr.MetadataTTL)
	}
	cl := &kafka.Client{Addr: kafka.TCP(c.addr), Transport: tr, Timeout: 10 * time.Second}
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "t", NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil || res.Errors["t"] != nil {
		t.Fatalf("create topic through the transport: %v %v", err, res)
	}
}

// Each misconfiguration gives one line naming the cluster, the broker and
// the cause.
func TestCheckErrorsNameTheCause(t *testing.T) {
	c := newSASLSSLCluster(t)
	dir := t.TempDir()
	wrongPW := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrongPW, []byte("wrong-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA, err := testcerts.NewCA(dir, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	plain := testkit.Cluster(t)
	// The in-process broker waits for the rest of a "request" as large as a
	// ClientHello's first bytes say (a real one closes the connection).
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = time.Second
	closed.Close()
	cases := []struct {
		name   string
		mutate func(*Config)
		addr   string
		want   []string
	}{
		{"wrong password", func(k *Config) { k.SASLPasswordFile = wrongPW }, c.addr,
			[]string{"edge Kafka broker " + c.addr, "wrong user name or password", `"mirror"`}},
		{"untrusted CA", func(k *Config) { k.CAFile = otherCA.CertFile }, c.addr,
			[]string{"edge Kafka broker " + c.addr, "not signed by a trusted CA", "--kafka-tls-ca"}},
		{"wrong server name", func(k *Config) { k.ServerName = "kafka.example" }, c.addr,
			[]string{"not valid for this name", "--kafka-tls-server-name"}},
		{"plaintext to a TLS listener", func(k *Config) { *k = Config{} }, c.addr,
			[]string{"edge Kafka broker", "--kafka-tls"}},
		{"unreachable", func(*Config) {}, closedAddr, []string{"edge Kafka broker " + closedAddr, "cannot connect"}},
		{"TLS to a plain-text listener", func(k *Config) { *k = Config{TLS: true} }, plain.ListenAddrs()[0],
			[]string{"edge Kafka broker", "plain-text listener", "remove --kafka-tls"}},
		{"missing password file", func(k *Config) { k.SASLPasswordFile = filepath.Join(dir, "nope") }, c.addr,
			[]string{"edge Kafka", "--kafka-sasl-password-file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := c.config()
			tc.mutate(&k)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := Check(ctx, "edge", []string{tc.addr}, k)
			if err == nil {
				t.Fatal("check passed")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if strings.Contains(msg, "wrong-password") || strings.Contains(msg, "right-password") {
				t.Errorf("error shows the password: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// SCRAM-SHA-256 and PLAIN, and a broker that requires a client certificate.
func TestOtherMechanismsAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("broker", testcerts.Options{CommonName: "broker", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue("client", testcerts.Options{CommonName: "mirror"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(srv.CertFile, srv.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, mech := range []string{MechanismSCRAMSHA256, MechanismPlain} {
		kname := map[string]string{MechanismSCRAMSHA256: "SCRAM-SHA-256", MechanismPlain: "PLAIN"}[mech]
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
			kfake.EnableSASL(), kfake.Superuser(kname, "mirror", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{TLS: true, CAFile: ca.CertFile, SASLMechanism: mech, SASLUsername: "mirror", SASLPasswordFile: pw}
		if err := Check(ctx, "hub", c.ListenAddrs(), cfg); err != nil {
			t.Errorf("%s: %v", mech, err)
		}
		c.Close()
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	withCert := Config{TLS: true, CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}
	if err := Check(ctx, "edge", c.ListenAddrs(), withCert); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if err := Check(ctx, "edge", c.ListenAddrs(), Config{TLS: true, CAFile: ca.CertFile}); err == nil ||
		!strings.Contains(err.Error(), "refused the client certificate") {
		t.Errorf("no client certificate for a broker requiring one: %v", err)
	}
}
