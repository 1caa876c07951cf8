// Command edgemirror ships Kafka records from edge sites to a central hub
// cluster: "edgemirror agent" runs at the edge, "edgemirror aggregator" in
// the data centre.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/agent"
	"github.com/edgemirror/edgemirror/aggregator"
	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/kafkaconn"
	"github.com/edgemirror/edgemirror/internal/secfile"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// Set at build time by make build and make dist with
// -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown" // build date, RFC 3339 UTC
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	os.Exit(exitCode(err, os.Stderr))
}

// signalContext is cancelled by the first SIGTERM or SIGINT; a second one
// exits at once.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
			return
		}
		<-sigs
		fmt.Fprintln(os.Stderr, "edgemirror: second signal, exiting now")
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(sigs); cancel() }
}

// exitCode turns run's error into the process exit code: 0 success or
// --help, 2 bad usage, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "edgemirror: %s\n", ue.message)
		if ue.hint != "" {
			fmt.Fprintf(stderr, "Try: %s\n", ue.hint)
		}
		return 2
	}
	fmt.Fprintf(stderr, "edgemirror: %v\n", err)
	return 1
}

const mainUsage = `edgemirror ships Kafka records from edge sites to a central hub cluster,
exactly once, over slow and unreliable links.

Usage:
  edgemirror agent [flags]        run at the edge: read edge Kafka, buffer, ship
  edgemirror aggregator [flags]   run in the data centre: receive, dedupe, write to hub Kafka
  edgemirror translate [flags]    hub offset of one edge record (exact)
  edgemirror translate-group [flags]
                                  move an edge consumer group to the hub (dry run by default)
  edgemirror reset-group [flags]  point a hub consumer group at a time (--to-datetime)
  edgemirror status [flags]       show every edge: state, backlog, RPO, losses
  edgemirror losses [flags]       list the lost ranges recorded in the hub
  edgemirror buffer ACTION        inspect an agent's buffer or renew its epoch, offline
  edgemirror version              print the version

Run "edgemirror COMMAND --help" for the flags of a command.
Every flag can also be set by an environment variable EDGEMIRROR_<FLAG>,
e.g. --buffer-max-bytes is read from EDGEMIRROR_BUFFER_MAX_BYTES.
`

// run is the whole program; getenv nil reads the process environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return &usageError{message: "missing command", hint: "edgemirror agent --help"}
	}
	switch args[0] {
	case "agent":
		return runAgent(ctx, args[1:], stdout, stderr, getenv)
	case "aggregator":
		return runAggregator(ctx, args[1:], stdout, stderr, getenv)
	case "translate":
		return runTranslate(ctx, args[1:], stdout, stderr, getenv)
	case "translate-group":
		return runTranslateGroup(ctx, args[1:], stdout, stderr, getenv)
	case "reset-group":
		return runResetGroup(ctx, args[1:], stdout, stderr, getenv)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr, getenv)
	case "losses":
		return runLosses(ctx, args[1:], stdout, stderr, getenv)
	case "buffer":
		return runBuffer(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "edgemirror %s (commit %s, built %s, %s, %s)\n", version, commit, date, runtime.Version(), platform())
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, mainUsage)
		return errHelp
	}
	return &usageError{message: fmt.Sprintf("unknown command %q", args[0]), hint: "edgemirror --help"}
}

// common holds the flags every long-running command has.
type common struct {
	metricsAddr  string
	logLevel     string
	logFormat    string
	check        bool
	checkConnect bool
	pprof        bool
	memLimit     int64
}

func (c *common) register(cmd *command) {
	cmd.section("Operations")
	cmd.str(&c.metricsAddr, "metrics-addr", "address of the Prometheus /metrics and /healthz endpoint, e.g. :9100 (empty disables)")
	cmd.choice(&c.logLevel, "log-level", []string{"debug", "info", "warn", "error"}, "log level: debug, info, warn or error")
	cmd.choice(&c.logFormat, "log-format", []string{"text", "json"}, "log format: text or json")
	cmd.bytes(&c.memLimit, "memory-limit", "soft memory limit of the Go runtime (as GOMEMLIMIT, which wins if set); the garbage collector works harder near it; 0 disables")
	cmd.boolv(&c.pprof, "pprof", "also serve Go profiles under /debug/pprof/ on --metrics-addr")
	cmd.boolv(&c.check, "check", "validate the configuration (and read every certificate, key, token and edges file), print it and exit (0 if valid)")
	cmd.boolv(&c.checkConnect, "check-connect", "like --check, but also connect to every configured endpoint and Kafka cluster (TLS, SASL) and exit 0 only if all answer")
}

// kafkaFlags registers the --kafka-* flags of the cluster a command talks to.
func kafkaFlags(cmd *command, k *kafkaconn.Config, cluster string) {
	cmd.boolv(&k.TLS, "kafka-tls", "connect to the "+cluster+" Kafka cluster with TLS")
	cmd.str(&k.CAFile, "kafka-tls-ca", "PEM file of the CA that signed the "+cluster+" brokers' certificates (default: the system roots)")
	cmd.str(&k.CertFile, "kafka-tls-cert", "PEM client certificate for the "+cluster+" brokers (mutual TLS)")
	cmd.str(&k.KeyFile, "kafka-tls-key", "PEM private key of --kafka-tls-cert")
	cmd.str(&k.ServerName, "kafka-tls-server-name", "name the "+cluster+" brokers' certificates must carry (default: the host of each broker address)")
	cmd.choice(&k.SASLMechanism, "kafka-sasl-mechanism", kafkaconn.Mechanisms[1:], "SASL mechanism towards the "+cluster+" cluster: plain, scram-sha-256 or scram-sha-512 (empty: no SASL)")
	cmd.str(&k.SASLUsername, "kafka-sasl-username", "SASL user name")
	cmd.str(&k.SASLPasswordFile, "kafka-sasl-password-file", "file holding the SASL password (one line; keep it mode 0600)")
}

// reloader is a runner that re-reads its credentials on SIGHUP.
type reloader interface{ Reload() }

// connectChecker is a runner that can test its connections (--check-connect).
type connectChecker interface {
	CheckConnect(context.Context) error
}

// secretFiles warns about secret files that group or others can read.
func warnLooseFiles(warn func(string), files map[string]string) {
	names := make([]string, 0, len(files))
	for flag := range files {
		names = append(names, flag)
	}
	sort.Strings(names)
	for _, flag := range names {
		path := files[flag]
		if path == "" {
			continue
		}
		if mode, loose := secfile.LooseMode(path); loose {
			warn(fmt.Sprintf("%s %s is readable by group or others (mode %#o); chmod 600 it", flag, path, mode))
		}
	}
}

// applyMemoryLimit sets the runtime's soft memory limit unless GOMEMLIMIT
// already does.
func (c *common) applyMemoryLimit(log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", slog.String("GOMEMLIMIT", v))
		return
	}
	if c.memLimit > 0 {
		debug.SetMemoryLimit(c.memLimit)
	}
}

func (c *common) logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serveMetrics serves /metrics and /healthz on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, pprofOn bool, reg *prometheus.Registry, log *slog.Logger) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("metrics listening", slog.String("addr", ln.Addr().String()))
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "edgemirror", Name: "build_info", Help: "Build information.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	}, func() float64 { return 1 }))
	return reg
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg := agent.DefaultConfig()
	// Edge gateways are small: keep the agent's heap tight by default. With
	// uncompressed edge data the live heap is a few MiB and the limit costs
	// nothing; it bounds the decompression buffers of compressed edge batches.
	co := common{logLevel: "info", logFormat: "text", memLimit: 32 << 20}
	var (
		policy      = cfg.BufferFull.String()
		compression = cfg.Compression.String()
		level       = cfg.CompressionLevel.String()
		start       = cfg.StartOffset.String()
		incarnation = cfg.OnNewIncarnation.String()
		batchBytes  = int64(cfg.BatchBytes)
		fetchBytes  = int64(cfg.FetchMaxBytes)
	)
	cmd := newCommand("agent",
		"Reads the edge Kafka cluster, buffers records durably in a local bbolt file while the link is down,\n"+
			"and ships them compressed and batched to an aggregator.",
		"edgemirror agent --edge-id plant-7 --brokers 127.0.0.1:9092 --aggregator http://hub.example:8080")
	cmd.section("Identity and sources")
	cmd.str(&cfg.EdgeID, "edge-id", "this edge's id (required): 1-64 of A-Z a-z 0-9 . _ -; names hub topics")
	cmd.list(&cfg.Brokers, "brokers", "edge Kafka bootstrap brokers, comma-separated host:port (required)")
	cmd.regex(&cfg.Topics, "topics", "regular expression of the topics to mirror (whole name); topics starting with _ never are")
	cmd.regex(&cfg.ExcludeTopics, "exclude-topics", "regular expression of topics not to mirror")
	cmd.choice(&start, "start-offset", []string{"earliest", "latest"}, "where a partition never read before starts: earliest or latest")
	cmd.choice(&incarnation, "on-new-incarnation", []string{"hold", "skip"},
		"a partition never read before that ends at or below what the hub already holds of it is a new incarnation (topic recreated, edge cluster rebuilt): hold (do not read it until the hub topic is removed or this is changed; logged and counted) or skip (read it from past the hub's offset; the offsets skipped are reported lost, reason source-incarnation)")
	cmd.section("Buffer")
	cmd.str(&cfg.BufferDir, "buffer-dir", "directory of the durable buffer (bbolt file buffer.db)")
	cmd.bytes(&cfg.BufferMaxBytes, "buffer-max-bytes", "largest size of the buffer file on disk")
	cmd.choice(&policy, "buffer-full", []string{"block", "drop-oldest"},
		"when the buffer is full: block (stop reading; edge retention holds the data) or drop-oldest (delete the oldest unsent chunks, logged, counted and reported)")
	cmd.section("Shipping")
	cmd.str(&cfg.Aggregator, "aggregator", "aggregator base URLs, comma-separated, http:// or https:// (required); a name resolving to several addresses counts as several endpoints, resolved again on every move; the agent moves to the next endpoint when one is unreachable or fails three times in a row, and stays on a healthy one")
	cmd.bytes(&batchBytes, "batch-bytes", "uncompressed bytes at which a chunk is cut")
	cmd.duration(&cfg.Linger, "linger", "longest wait before a partial chunk is cut")
	cmd.rate(&cfg.Bandwidth, "bandwidth", "cap on bytes on the wire to the aggregator, e.g. 512KiB/s or 4Mbit/s; 0 is unlimited")
	cmd.choice(&compression, "compression", []string{"zstd", "s2", "gzip", "none"}, "chunk compression: zstd, s2, gzip or none")
	cmd.choice(&level, "compression-level", []string{"fastest", "default", "better", "best"}, "compression level: fastest, default, better or best")
	cmd.intv(&cfg.Inflight, "inflight", "chunks in flight at once (pipelining hides the link's round-trip time)")
	cmd.duration(&cfg.RequestTimeout, "request-timeout", "an upload is cut when none of its bytes (nor of its connection) moved for this long; also how long the aggregator's answer may take after the last byte")
	cmd.duration(&cfg.MaxBackoff, "max-backoff", "longest wait between two attempts to ship a chunk")
	cmd.duration(&cfg.HeartbeatInterval, "heartbeat-interval", "how often backlog, RPO and losses are reported to the aggregator, also when idle, blocked or refused (on a connection of their own)")
	cmd.section("Aggregator security")
	cmd.str(&cfg.TLSCA, "tls-ca", "PEM file of the CA that signed the aggregator's certificate (default: the system roots); the server name is always verified")
	cmd.str(&cfg.TLSCert, "tls-cert", "PEM client certificate naming this edge (URI SAN edgemirror://edge/<id> or CN <id>); re-read on SIGHUP")
	cmd.str(&cfg.TLSKey, "tls-key", "PEM private key of --tls-cert")
	cmd.str(&cfg.TokenFile, "token-file", "file holding this edge's bearer token (one line); re-read on SIGHUP")
	cmd.section("Edge Kafka security")
	kafkaFlags(cmd, &cfg.Kafka, "edge")
	cmd.section("Edge Kafka tuning")
	cmd.duration(&cfg.MetadataInterval, "metadata-interval", "how often topics and partitions are re-listed (new ones are picked up within it)")
	cmd.bytes(&fetchBytes, "fetch-max-bytes", "largest fetch response from the edge cluster")
	cmd.boolv(&cfg.SyncTopicConfigs, "sync-topic-configs",
		"read each mirrored topic's own settings (cleanup.policy, retention, compaction, segment.ms, max.message.bytes,\n"+
			"      compression.type; never broker defaults) when it is first mirrored and every --metadata-interval, and\n"+
			"      report changes to the aggregator so that the hub topic keeps them; false turns this off")
	cmd.section("Consumer group checkpoints")
	cmd.regex(&cfg.SyncGroups, "sync-groups", "regular expression of the edge consumer groups (whole id) whose committed offsets are sent to the aggregator, which keeps them translated in the hub for translate-group; empty: none")
	cmd.duration(&cfg.CheckpointInterval, "checkpoint-interval", "how often the offsets of the --sync-groups groups are read and sent")
	co.register(cmd)

	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	cfg.Version = version
	cfg.BufferFull, _ = buffer.ParsePolicy(policy)
	cfg.Compression, _ = wire.ParseCodec(compression)
	cfg.CompressionLevel, _ = wire.ParseLevel(level)
	cfg.StartOffset, _ = agent.ParseStartOffset(start)
	cfg.OnNewIncarnation, _ = agent.ParseNewIncarnation(incarnation)
	cfg.BatchBytes = int(min(batchBytes, 1<<40))
	cfg.FetchMaxBytes = int(min(fetchBytes, 1<<30))
	if err := cfg.Validate(); err != nil {
		return &usageError{message: err.Error(), hint: cmd.example}
	}
	summary := fmt.Sprintf("configuration valid: agent edge-id=%s brokers=%s (%s) aggregator=%s credential=%s buffer=%s (max %s, %s) batch=%d linger=%s bandwidth=%d compression=%s/%s inflight=%d sync-topic-configs=%t",
		cfg.EdgeID, strings.Join(cfg.Brokers, ","), cfg.Kafka, cfg.Aggregator, agentCredential(cfg), cfg.BufferDir, fmtBytes(cfg.BufferMaxBytes), cfg.BufferFull,
		cfg.BatchBytes, cfg.Linger, cfg.Bandwidth, cfg.Compression, cfg.CompressionLevel, cfg.Inflight, cfg.SyncTopicConfigs)
	secrets := cfg.Kafka.SecretFiles()
	secrets["--tls-key"], secrets["--token-file"] = cfg.TLSKey, cfg.TokenFile
	return co.serve(ctx, stdout, stderr, secrets, summary, func(log *slog.Logger, reg prometheus.Registerer) (runner, error) {
		cfg.Logger, cfg.Registerer = log, reg
		return agent.New(cfg)
	})
}

// runner is a command's long-running part.
type runner interface{ Run(context.Context) error }

// serve sets up logging, the memory limit and the metrics listener, builds
// the runner and runs it until ctx ends.
func (c *common) serve(ctx context.Context, stdout, stderr io.Writer, secrets map[string]string, summary string,
	build func(*slog.Logger, prometheus.Registerer) (runner, error)) error {
	log := c.logger(stderr)
	if c.check || c.checkConnect {
		// Building validates every file; nothing is started.
		warnLooseFiles(func(s string) { fmt.Fprintln(stderr, "warning: "+s) }, secrets)
		r, err := build(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if err != nil {
			return err
		}
		if c.checkConnect {
			cc, ok := r.(connectChecker)
			if !ok {
				return errors.New("--check-connect is not supported by this command")
			}
			if err := cc.CheckConnect(ctx); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "connections ok")
		}
		fmt.Fprintln(stdout, summary)
		return nil
	}
	warnLooseFiles(func(s string) { log.Warn(s) }, secrets)
	reg := newRegistry()
	c.applyMemoryLimit(log)
	r, err := build(log, reg)
	if err != nil {
		return err
	}
	if rl, ok := r.(reloader); ok {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					log.Info("SIGHUP: reloading credentials")
					rl.Reload()
				}
			}
		}()
	}
	stopMetrics, err := serveMetrics(ctx, c.metricsAddr, c.pprof, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return r.Run(ctx)
}

func runAggregator(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cfg := aggregator.DefaultConfig()
	co := common{logLevel: "info", logFormat: "text"}
	var (
		maxChunk     = cfg.MaxChunkBytes
		maxRaw       = cfg.MaxRawBytes
		hubBatch     = int64(cfg.HubBatchBytes)
		compression  = "lz4"
		maxReqHeader = int64(cfg.MaxRequestHeaderBytes)
	)
	cmd := newCommand("aggregator",
		"Receives chunks from edge agents, drops records the hub already has (by source offset), and writes\n"+
			"every record exactly once to the hub Kafka cluster, in Kafka transactions (one transactional id per\n"+
			"edge; any number of aggregators may serve an edge). Hub consumers must read with isolation.level=read_committed.",
		"edgemirror aggregator --brokers 127.0.0.1:9092 --listen :8080 --state-dir /var/lib/edgemirror-aggregator")
	cmd.section("Listener")
	cmd.str(&cfg.Listen, "listen", "address of the chunk API (HTTP/1.1 and h2c, or HTTPS with --tls-cert); other than loopback it needs --tls-cert and --edges-file, or --insecure-accept-any-edge")
	cmd.bytes(&maxChunk, "max-chunk-bytes", "largest chunk accepted, as received (compressed)")
	cmd.bytes(&maxRaw, "max-raw-bytes", "largest decompressed chunk payload accepted")
	cmd.duration(&cfg.OrderWait, "order-wait", "how long a chunk that arrived before its predecessor waits before it is answered 503")
	cmd.duration(&cfg.ShutdownTimeout, "shutdown-timeout", "bound on the graceful shutdown (chunks cut short are not acknowledged)")
	cmd.section("Security")
	cmd.str(&cfg.TLSCert, "tls-cert", "PEM certificate: serve HTTPS (TLS 1.2+, HTTP/2 and HTTP/1.1); reloaded on SIGHUP")
	cmd.str(&cfg.TLSKey, "tls-key", "PEM private key of --tls-cert; reloaded on SIGHUP")
	cmd.str(&cfg.ClientCA, "client-ca", "PEM CA whose client certificates are verified; an edge's id is its URI SAN edgemirror://edge/<id>, else its CN; reloaded on SIGHUP")
	cmd.str(&cfg.EdgesFile, "edges-file", "the edges allowed in, one per line: EDGE-ID cert|token:sha256:HEX [TOPIC-REGEX]; reloaded on SIGHUP (see docs/security.md)")
	cmd.boolv(&cfg.InsecureAcceptAnyEdge, "insecure-accept-any-edge", "allow a non-loopback --listen without --edges-file and TLS: any client may then send as any edge (warned every 10 minutes)")
	cmd.section("Limits")
	cmd.intv(&cfg.MaxChunkRecords, "max-chunk-records", "most records in one chunk")
	cmd.bytes(&cfg.MaxRecordBytes, "max-record-bytes", "largest record (key plus value); a chunk holding a larger one is refused with 413")
	cmd.intv(&cfg.MaxRecordHeaders, "max-record-headers", "most headers on one record")
	cmd.bytes(&cfg.MaxRecordHeaderBytes, "max-record-header-bytes", "largest total of header keys and values on one record")
	cmd.bytes(&maxReqHeader, "max-request-header-bytes", "largest HTTP request header block")
	cmd.duration(&cfg.ReadHeaderTimeout, "read-header-timeout", "bound on receiving a request's headers")
	cmd.duration(&cfg.ReadTimeout, "read-timeout", "longest a request body may stall (no byte arriving) before the request is dropped; a slow upload that moves is never cut")
	cmd.duration(&cfg.IdleTimeout, "idle-timeout", "idle connections are closed after this long")
	cmd.intv(&cfg.MaxRequests, "max-requests", "API requests handled at once, all edges together (503 beyond)")
	cmd.intv(&cfg.MaxEdgeRequests, "max-edge-requests", "API requests of one edge handled at once (429 beyond)")
	cmd.intv(&cfg.EdgeRequestRate, "edge-request-rate", "API requests per second of one edge, bursts of twice as many (429 beyond); 0 is unlimited")
	cmd.bytes(&cfg.MaxDecodedBytes, "max-decoded-bytes", "memory of all chunks being received, decoded and applied at once; a chunk waits up to --order-wait (at most half --read-timeout) for its share (503 after)")
	cmd.intv(&cfg.MaxEdges, "max-edges", "distinct edge ids served (429 for more)")
	cmd.intv(&cfg.MaxSourcePartitions, "max-source-partitions", "distinct (edge, topic, partition) the aggregator keeps state for (429 for more)")
	cmd.section("Hub Kafka")
	cmd.list(&cfg.Brokers, "brokers", "hub Kafka bootstrap brokers, comma-separated host:port (required)")
	cmd.str(&cfg.TopicTemplate, "topic-template", "hub topic of an edge topic; {edge} and {topic} are replaced")
	cmd.intv(&cfg.HubReplicationFactor, "hub-replication-factor", "replication factor of created hub topics; -1 uses the hub's default")
	cmd.choice(&compression, "hub-compression", []string{"none", "gzip", "snappy", "lz4", "zstd"}, "compression of produce requests to the hub")
	cmd.bytes(&hubBatch, "hub-batch-bytes", "largest record batch to one hub partition (uncompressed); keep below the topics' max.message.bytes")
	cmd.duration(&cfg.HubTimeout, "hub-timeout", "bound on one request to the hub")
	cmd.str(&cfg.TransactionalIDPrefix, "transactional-id-prefix", "prefix of the per-edge transactional id of hub writes (the id is prefix + edge id); every aggregator of one fleet must use the same")
	cmd.duration(&cfg.TransactionTimeout, "transaction-timeout", "hub transaction timeout: how long the hub keeps a vanished aggregator's transaction open before aborting it (at most the hub's transaction.max.timeout.ms)")
	cmd.intv(&cfg.MaxGroupChunks, "max-group-chunks", "most chunks of one edge committed in one hub transaction (group commit)")
	cmd.duration(&cfg.GroupLinger, "group-linger", "how long a busy edge's next hub transaction waits for more of its chunks (fewer, larger transactions); an edge that was idle never waits; 0 never waits")
	cmd.intv(&cfg.ParallelPartitions, "parallel-partitions", "hub partitions produced at once, in one produce request per partition leader")
	cmd.section("Consumer group checkpoints")
	cmd.str(&cfg.CheckpointTopic, "checkpoint-topic", "compacted hub topic that keeps the latest translated checkpoint per edge, group and partition")
	cmd.boolv(&cfg.SyncGroupOffsets, "sync-group-offsets", "also commit translated checkpoints to the same group on the hub, only while it has no active members, never backwards")
	cmd.section("Hub topic settings")
	cmd.boolv(&cfg.SyncTopicConfigs, "sync-topic-configs",
		"give hub topics the settings the agents report for their edge topics (cleanup.policy, retention.ms, retention.bytes,\n"+
			"      min/max.compaction.lag.ms, delete.retention.ms, min.cleanable.dirty.ratio, segment.ms, max.message.bytes,\n"+
			"      compression.type) and keep them in sync; false ignores the reports")
	cmd.kvs(&cfg.HubTopicConfigs, "hub-topic-config", aggregator.ParseTopicConfig,
		"KEY=VALUE set on every hub topic, winning over what the edge says (e.g. retention.ms=2592000000 for a longer\n"+
			"      retention in the centre); repeat the flag for several, or separate them with ; (also in the environment variable).\n"+
			"      Kafka refuses records without a key on compacted topics: set cleanup.policy=compact only for keyed edge topics")
	cmd.section("Hub Kafka security")
	kafkaFlags(cmd, &cfg.Kafka, "hub")
	cmd.section("Fleet view")
	cmd.str(&cfg.StatusTopic, "status-topic", "compacted hub topic holding one status record per edge (shared by every aggregator)")
	cmd.str(&cfg.EventsTopic, "events-topic", "hub topic of loss events, keyed by edge")
	cmd.duration(&cfg.DisconnectAfter, "disconnect-after", "an edge not heard from for this long is shown disconnected (keep above the agents' --heartbeat-interval)")
	cmd.duration(&cfg.BehindAfter, "behind-after", "an edge whose RPO is above this is shown behind")
	cmd.duration(&cfg.FleetRefresh, "fleet-refresh", "how often the status and events topics are read back (what other aggregators received)")
	cmd.str(&cfg.AggregatorID, "aggregator-id", "name of this aggregator in status records and loss events (default: the host name)")
	cmd.section("State")
	cmd.str(&cfg.StateDir, "state-dir", "directory of the aggregator's state (resume points and loss reports; may be lost without duplicates)")
	co.register(cmd)

	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	cfg.MaxChunkBytes, cfg.MaxRawBytes = maxChunk, maxRaw
	cfg.HubBatchBytes = int(min(hubBatch, 1<<30))
	cfg.MaxRequestHeaderBytes = int(min(maxReqHeader, 1<<30))
	codecs := map[string]kafka.Compression{"none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd}
	cfg.HubCompression = codecs[compression]
	if err := cfg.Validate(); err != nil {
		return &usageError{message: err.Error(), hint: cmd.example}
	}
	summary := fmt.Sprintf("configuration valid: aggregator listen=%s tls=%t client-ca=%q edges-file=%q insecure-accept-any-edge=%t brokers=%s (%s) state-dir=%s topic-template=%s max-chunk=%s max-decoded=%s sync-topic-configs=%t hub-topic-config=%s",
		cfg.Listen, cfg.TLSCert != "", cfg.ClientCA, cfg.EdgesFile, cfg.InsecureAcceptAnyEdge, strings.Join(cfg.Brokers, ","), cfg.Kafka,
		cfg.StateDir, cfg.TopicTemplate, fmtBytes(cfg.MaxChunkBytes), fmtBytes(cfg.MaxDecodedBytes),
		cfg.SyncTopicConfigs, (&kvValue{p: &cfg.HubTopicConfigs}).String())
	secrets := cfg.Kafka.SecretFiles()
	secrets["--tls-key"], secrets["--edges-file"] = cfg.TLSKey, cfg.EdgesFile
	return co.serve(ctx, stdout, stderr, secrets, summary, func(log *slog.Logger, reg prometheus.Registerer) (runner, error) {
		cfg.Logger, cfg.Registerer = log, reg
		return aggregator.New(cfg)
	})
}

// platform is GOOS/GOARCH, with the ARM version for 32-bit ARM builds
// (linux/arm v7).
func platform() string {
	p := runtime.GOOS + "/" + runtime.GOARCH
	if bi, ok := debug.ReadBuildInfo(); ok && runtime.GOARCH == "arm" {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				p += " v" + s.Value
			}
		}
	}
	return p
}

func fmtBytes(n int64) string { return (*bytesValue)(&n).String() }

// agentCredential names (never shows) how the agent authenticates.
func agentCredential(cfg agent.Config) string {
	var parts []string
	if cfg.TLSCert != "" {
		parts = append(parts, "cert:"+cfg.TLSCert)
	}
	if cfg.TokenFile != "" {
		parts = append(parts, "token-file:"+cfg.TokenFile)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

func init() {
	if bi, ok := debug.ReadBuildInfo(); ok && version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
}
