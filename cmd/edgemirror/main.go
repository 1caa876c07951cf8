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
	"github.com/edgemirror/edgemirror/internal/wire"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	case "buffer":
		return runBuffer(ctx, args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "edgemirror %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, mainUsage)
		return errHelp
	}
	return &usageError{message: fmt.Sprintf("unknown command %q", args[0]), hint: "edgemirror --help"}
}

// common holds the flags every long-running command has.
type common struct {
	metricsAddr string
	logLevel    string
	logFormat   string
	check       bool
	pprof       bool
	memLimit    int64
}

func (c *common) register(cmd *command) {
	cmd.section("Operations")
	cmd.str(&c.metricsAddr, "metrics-addr", "address of the Prometheus /metrics and /healthz endpoint, e.g. :9100 (empty disables)")
	cmd.choice(&c.logLevel, "log-level", []string{"debug", "info", "warn", "error"}, "log level: debug, info, warn or error")
	cmd.choice(&c.logFormat, "log-format", []string{"text", "json"}, "log format: text or json")
	cmd.bytes(&c.memLimit, "memory-limit", "soft memory limit of the Go runtime (as GOMEMLIMIT, which wins if set); the garbage collector works harder near it; 0 disables")
	cmd.boolv(&c.pprof, "pprof", "also serve Go profiles under /debug/pprof/ on --metrics-addr")
	cmd.boolv(&c.check, "check", "validate the configuration, print it and exit (0 if valid)")
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
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
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
	cmd.duration(&cfg.RequestTimeout, "request-timeout", "bound on one chunk upload, added to the time --bandwidth needs for it")
	cmd.duration(&cfg.MaxBackoff, "max-backoff", "longest wait between two attempts to ship a chunk")
	cmd.section("Edge Kafka tuning")
	cmd.duration(&cfg.MetadataInterval, "metadata-interval", "how often topics and partitions are re-listed (new ones are picked up within it)")
	cmd.bytes(&fetchBytes, "fetch-max-bytes", "largest fetch response from the edge cluster")
	co.register(cmd)

	if err := cmd.parse(args, getenv); err != nil {
		if errors.Is(err, errHelp) {
			cmd.usage(stdout)
		}
		return err
	}
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
	if co.check {
		fmt.Fprintf(stdout, "configuration valid: agent edge-id=%s brokers=%s aggregator=%s buffer=%s (max %s, %s) batch=%d linger=%s bandwidth=%d compression=%s/%s inflight=%d\n",
			cfg.EdgeID, strings.Join(cfg.Brokers, ","), cfg.Aggregator, cfg.BufferDir, fmtBytes(cfg.BufferMaxBytes), cfg.BufferFull,
			cfg.BatchBytes, cfg.Linger, cfg.Bandwidth, cfg.Compression, cfg.CompressionLevel, cfg.Inflight)
		return nil
	}
	return co.serve(ctx, stderr, func(log *slog.Logger, reg prometheus.Registerer) (runner, error) {
		cfg.Logger, cfg.Registerer = log, reg
		return agent.New(cfg)
	})
}

// runner is a command's long-running part.
type runner interface{ Run(context.Context) error }

// serve sets up logging, the memory limit and the metrics listener, builds
// the runner and runs it until ctx ends.
func (c *common) serve(ctx context.Context, stderr io.Writer, build func(*slog.Logger, prometheus.Registerer) (runner, error)) error {
	log := c.logger(stderr)
	reg := newRegistry()
	c.applyMemoryLimit(log)
	r, err := build(log, reg)
	if err != nil {
		return err
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
		maxChunk    = cfg.MaxChunkBytes
		maxRaw      = cfg.MaxRawBytes
		hubBatch    = int64(cfg.HubBatchBytes)
		compression = "lz4"
	)
	cmd := newCommand("aggregator",
		"Receives chunks from edge agents, drops records the hub already has (by source offset), and writes\n"+
			"every record exactly once to the hub Kafka cluster, in Kafka transactions (one transactional id per\n"+
			"edge; any number of aggregators may serve an edge). Hub consumers must read with isolation.level=read_committed.",
		"edgemirror aggregator --brokers 127.0.0.1:9092 --listen :8080 --state-dir /var/lib/edgemirror-aggregator")
	cmd.section("Listener")
	cmd.str(&cfg.Listen, "listen", "address of the chunk API (HTTP/1.1 and h2c)")
	cmd.bytes(&maxChunk, "max-chunk-bytes", "largest chunk accepted, as received (compressed)")
	cmd.bytes(&maxRaw, "max-raw-bytes", "largest decompressed chunk payload accepted")
	cmd.duration(&cfg.OrderWait, "order-wait", "how long a chunk that arrived before its predecessor waits before it is answered 503")
	cmd.duration(&cfg.ShutdownTimeout, "shutdown-timeout", "bound on the graceful shutdown (chunks cut short are not acknowledged)")
	cmd.section("Hub Kafka")
	cmd.list(&cfg.Brokers, "brokers", "hub Kafka bootstrap brokers, comma-separated host:port (required)")
	cmd.str(&cfg.TopicTemplate, "topic-template", "hub topic of an edge topic; {edge} and {topic} are replaced")
	cmd.intv(&cfg.HubReplicationFactor, "hub-replication-factor", "replication factor of created hub topics; -1 uses the hub's default")
	cmd.choice(&compression, "hub-compression", []string{"none", "gzip", "snappy", "lz4", "zstd"}, "compression of produce requests to the hub")
	cmd.bytes(&hubBatch, "hub-batch-bytes", "largest produce request (uncompressed); keep below the topics' max.message.bytes")
	cmd.duration(&cfg.HubTimeout, "hub-timeout", "bound on one request to the hub")
	cmd.str(&cfg.TransactionalIDPrefix, "transactional-id-prefix", "prefix of the per-edge transactional id of hub writes (the id is prefix + edge id); every aggregator of one fleet must use the same")
	cmd.duration(&cfg.TransactionTimeout, "transaction-timeout", "hub transaction timeout: how long the hub keeps a vanished aggregator's transaction open before aborting it (at most the hub's transaction.max.timeout.ms)")
	cmd.intv(&cfg.MaxGroupChunks, "max-group-chunks", "most chunks of one edge committed in one hub transaction (group commit)")
	cmd.intv(&cfg.ParallelPartitions, "parallel-partitions", "partitions of one chunk produced at once")
	cmd.section("State")
	cmd.str(&cfg.StateDir, "state-dir", "directory of the aggregator's state (resume points and loss reports; may be lost without duplicates)")
	co.register(cmd)

	if err := cmd.parse(args, getenv); err != nil {
		if errors.Is(err, errHelp) {
			cmd.usage(stdout)
		}
		return err
	}
	cfg.MaxChunkBytes, cfg.MaxRawBytes = maxChunk, maxRaw
	cfg.HubBatchBytes = int(min(hubBatch, 1<<30))
	codecs := map[string]kafka.Compression{"none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd}
	cfg.HubCompression = codecs[compression]
	if err := cfg.Validate(); err != nil {
		return &usageError{message: err.Error(), hint: cmd.example}
	}
	if co.check {
		fmt.Fprintf(stdout, "configuration valid: aggregator listen=%s brokers=%s state-dir=%s topic-template=%s max-chunk=%s\n",
			cfg.Listen, strings.Join(cfg.Brokers, ","), cfg.StateDir, cfg.TopicTemplate, fmtBytes(cfg.MaxChunkBytes))
		return nil
	}
	return co.serve(ctx, stderr, func(log *slog.Logger, reg prometheus.Registerer) (runner, error) {
		cfg.Logger, cfg.Registerer = log, reg
		return aggregator.New(cfg)
	})
}

func fmtBytes(n int64) string { return (*bytesValue)(&n).String() }

func init() {
	if bi, ok := debug.ReadBuildInfo(); ok && version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
}
