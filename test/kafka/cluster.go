// Package realkafka starts real Apache Kafka clusters (and MirrorMaker 2) for
// edgemirror's end-to-end tests, by driving kafka.sh and mm2.sh beside this
// file. The JVMs run from Maven Central jars; see README.md.
//
// # Basics
//
// Start runs "kafka.sh up NAME PORT", which starts a single-node KRaft
// cluster (combined broker+controller) bound to 127.0.0.1 and returns when it
// answers Metadata. Kill, Restart, Stop and Clean map to the script's
// commands. Each cluster's data and logs live under the work dir
// (KAFKA_WORK, default test/kafka/.work/NAME).
//
// # Caveats
//
// Clusters are separate OS processes that outlive the test binary if it dies:
// always defer Clean (or Stop). Names are global in the work dir: two tests
// (or two packages run in parallel by go test) must use different names.
// Available reports false when EDGEMIRROR_REAL_KAFKA=0; tests skip then.
package realkafka

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// EnvRealKafka turns the real-Kafka tests off when set to "0".
const EnvRealKafka = "EDGEMIRROR_REAL_KAFKA"

// DefaultVersion is the Kafka version kafka.sh runs when none is chosen.
const DefaultVersion = "4.4.0"

// Available is false when EDGEMIRROR_REAL_KAFKA=0, true otherwise.
func Available() bool { return os.Getenv(EnvRealKafka) != "0" }

// Dir is the directory holding kafka.sh, mm2.sh and this file.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Dir(file)
}

// Version is the Kafka version the scripts use: KAFKA_VERSION or DefaultVersion.
func Version() string {
	if v := os.Getenv("KAFKA_VERSION"); v != "" {
		return v
	}
	return DefaultVersion
}

// FreePort returns a TCP port on 127.0.0.1 that is free, and whose
// successor (the default controller port) is free too.
func FreePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("listen: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p >= 65534 {
			l.Close()
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, errors.New("no free port pair on 127.0.0.1 after 50 tries")
}

// Option configures Start.
type Option func(*options)

type options struct {
	version    string
	extraProps []string
	advertised string
	saslSSL    bool
	heap       string
	workDir    string
	env        []string
}

// WithVersion selects the Kafka version (KAFKA_VERSION).
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// WithProps adds broker properties, each "key=value" (KAFKA_EXTRA_PROPS).
func WithProps(kv ...string) Option {
	return func(o *options) { o.extraProps = append(o.extraProps, kv...) }
}

// WithAdvertisedAddr makes the broker advertise hostport instead of its
// listener (ADVERTISED_HOST_PORT), e.g. a WAN proxy in front of it.
func WithAdvertisedAddr(hostport string) Option {
	return func(o *options) { o.advertised = hostport }
}

// WithSASLSSL makes the client listener SASL_SSL (SCRAM-SHA-512 and PLAIN)
// with a fresh self-signed CA; see Cluster.Security.
func WithSASLSSL() Option { return func(o *options) { o.saslSSL = true } }

// WithHeap sets the broker JVM heap flags (KAFKA_HEAP_OPTS).
func WithHeap(flags string) Option { return func(o *options) { o.heap = flags } }

// WithWorkDir sets the work dir (KAFKA_WORK).
func WithWorkDir(dir string) Option { return func(o *options) { o.workDir = dir } }

// WithEnv adds raw "K=V" environment entries for the script.
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// Cluster is one running (or stopped) single-node Kafka cluster.
type Cluster struct {
	name    string
	port    int
	addr    string
	env     []string
	workDir string
	// StartTime is how long the last Start or Restart took, script included.
	StartTime time.Duration
}

// Security holds what a client needs for a SASL_SSL cluster.
type Security struct {
	User, Password string // SCRAM-SHA-512 and PLAIN
	CAFile         string // PEM
}

// Start runs "kafka.sh up name port" and returns once the cluster answers.
// If name is already running, it returns the running cluster.
func Start(ctx context.Context, name string, port int, opts ...Option) (*Cluster, error) {
	o := options{version: Version()}
	for _, opt := range opts {
		opt(&o)
	}
	env := append(os.Environ(), "KAFKA_VERSION="+o.version)
	if len(o.extraProps) > 0 {
		env = append(env, "KAFKA_EXTRA_PROPS="+strings.Join(o.extraProps, "\n"))
	}
	if o.advertised != "" {
		env = append(env, "ADVERTISED_HOST_PORT="+o.advertised)
	}
	if o.heap != "" {
		env = append(env, "KAFKA_HEAP_OPTS="+o.heap)
	}
	if o.workDir != "" {
		env = append(env, "KAFKA_WORK="+o.workDir)
	}
	env = append(env, o.env...)
	c := &Cluster{name: name, port: port, env: env, workDir: o.workDir}
	args := []string{"up", name, strconv.Itoa(port)}
	if o.saslSSL {
		args = append(args, "--sasl-ssl")
	}
	t0 := time.Now()
	out, err := c.script(ctx, "kafka.sh", args...)
	if err != nil {
		return nil, err
	}
	c.StartTime = time.Since(t0)
	c.addr = lastLine(out)
	if c.addr == "" {
		return nil, fmt.Errorf("kafka.sh up %s printed no address", name)
	}
	return c, nil
}

// Name is the cluster's name in the work dir.
func (c *Cluster) Name() string { return c.name }

// Addr is the bootstrap address clients use, "127.0.0.1:PORT" (or the
// advertised address given WithAdvertisedAddr).
func (c *Cluster) Addr() string { return c.addr }

// ListenAddr is the broker's own client listener, whatever it advertises.
func (c *Cluster) ListenAddr() string { return "127.0.0.1:" + strconv.Itoa(c.port) }

// DataDir is the cluster's directory (config, data, logs/kafka.out).
func (c *Cluster) DataDir() string {
	w := c.workDir
	if w == "" {
		w = os.Getenv("KAFKA_WORK")
	}
	if w == "" {
		w = filepath.Join(Dir(), ".work")
	}
	return filepath.Join(w, c.name)
}

// Kill sends SIGKILL to the broker JVM (data is kept).
func (c *Cluster) Kill(ctx context.Context) error {
	_, err := c.script(ctx, "kafka.sh", "kill", c.name)
	return err
}

// Restart stops the broker if it runs and starts it again on the same data
// and config; it also works after Kill.
func (c *Cluster) Restart(ctx context.Context) error {
	t0 := time.Now()
	_, err := c.script(ctx, "kafka.sh", "restart", c.name)
	if err == nil {
		c.StartTime = time.Since(t0)
	}
	return err
}

// Stop shuts the broker down gracefully (SIGKILL after ~20 s); data is kept.
func (c *Cluster) Stop(ctx context.Context) error {
	_, err := c.script(ctx, "kafka.sh", "down", c.name)
	return err
}

// Clean stops the broker and deletes its data.
func (c *Cluster) Clean(ctx context.Context) error {
	_, err := c.script(ctx, "kafka.sh", "clean", c.name)
	return err
}

// Security reads the credentials kafka.sh wrote for a SASL_SSL cluster.
func (c *Cluster) Security() (*Security, error) {
	f, err := os.Open(filepath.Join(c.DataDir(), "sasl.env"))
	if err != nil {
		return nil, fmt.Errorf("read sasl.env (started WithSASLSSL?): %w", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read sasl.env: %w", err)
	}
	return &Security{User: kv["KAFKA_SASL_USER"], Password: kv["KAFKA_SASL_PASSWORD"], CAFile: kv["KAFKA_CA_PEM"]}, nil
}

// TLSConfig trusts the cluster's CA (SASL_SSL clusters only).
func (s *Security) TLSConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// MirrorMaker is a MirrorMaker 2 process started by StartMirrorMaker.
type MirrorMaker struct {
	name string
	env  []string
	// StartTime is how long mm2.sh up took.
	StartTime time.Duration
}

// StartMirrorMaker runs "mm2.sh up name propsFile args...". version selects
// connect-mirror (MM2_VERSION); empty means the scripts' default.
func StartMirrorMaker(ctx context.Context, name, propsFile, version string, args ...string) (*MirrorMaker, error) {
	env := os.Environ()
	if version != "" {
		env = append(env, "MM2_VERSION="+version)
	}
	m := &MirrorMaker{name: name, env: env}
	t0 := time.Now()
	c := &Cluster{env: env}
	if _, err := c.script(ctx, "mm2.sh", append([]string{"up", name, propsFile}, args...)...); err != nil {
		return nil, err
	}
	m.StartTime = time.Since(t0)
	return m, nil
}

// LogFile is MirrorMaker's console log.
func (m *MirrorMaker) LogFile() string {
	w := os.Getenv("KAFKA_WORK")
	if w == "" {
		w = filepath.Join(Dir(), ".work")
	}
	return filepath.Join(w, "mm2", m.name, "logs", "mm2.out")
}

// Stop shuts MirrorMaker down (SIGKILL after ~20 s) and removes its logs
// when clean is true.
func (m *MirrorMaker) Stop(ctx context.Context, clean bool) error {
	c := &Cluster{env: m.env}
	cmd := "down"
	if clean {
		cmd = "clean"
	}
	_, err := c.script(ctx, "mm2.sh", cmd, m.name)
	return err
}

// script runs one of the scripts beside this file, bounded by ctx.
// Its stderr is returned inside the error when it fails.
func (c *Cluster) script(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Minute)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(Dir(), name)}, args...)...)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 4000))
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
