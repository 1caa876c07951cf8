package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
)

// TestMain fails the package if a goroutine outlives the tests; only the
// in-process Kafka's (kfake) are ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testkit.LeakOptions()...) }

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestUsageErrors(t *testing.T) {
	agentOK := []string{"agent", "--edge-id", "e1", "--brokers", "127.0.0.1:9092", "--aggregator", "http://127.0.0.1:8080", "--check"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantMsg string // part of the one-line error, naming the flag
	}{
		{"no command", nil, nil, "missing command"},
		{"unknown command", []string{"mirror"}, nil, `unknown command "mirror"`},
		{"unknown flag", []string{"agent", "--nope"}, nil, "unknown flag --nope"},
		{"missing edge id", []string{"agent", "--brokers", "a:1", "--aggregator", "http://x:1"}, nil, "--edge-id"},
		{"bad edge id", append(agentOK[:0:0], "agent", "--edge-id", "bad id!", "--brokers", "a:1", "--aggregator", "http://x:1"), nil, "--edge-id"},
		{"missing brokers", []string{"agent", "--edge-id", "e1", "--aggregator", "http://x:1"}, nil, "--brokers"},
		{"bad size", append(append([]string{}, agentOK...), "--buffer-max-bytes", "12 parsecs"), nil, "--buffer-max-bytes"},
		{"bad rate", append(append([]string{}, agentOK...), "--bandwidth", "fast"), nil, "--bandwidth"},
		{"bad duration", append(append([]string{}, agentOK...), "--linger", "1 minute"), nil, "--linger"},
		{"bad policy", append(append([]string{}, agentOK...), "--buffer-full", "panic"), nil, "--buffer-full"},
		{"bad compression", append(append([]string{}, agentOK...), "--compression", "lz5"), nil, "--compression"},
		{"bad regex", append(append([]string{}, agentOK...), "--topics", "("), nil, "--topics"},
		{"bad aggregator url", []string{"agent", "--edge-id", "e1", "--brokers", "a:1", "--aggregator", "ftp://x"}, nil, "--aggregator"},
		{"zero inflight", append(append([]string{}, agentOK...), "--inflight", "0"), nil, "--inflight"},
		{"batch bigger than buffer", append(append([]string{}, agentOK...), "--batch-bytes", "8MiB", "--buffer-max-bytes", "8MiB"), nil, "--batch-bytes"},
		{"bad env value", agentOK, map[string]string{"EDGEMIRROR_BUFFER_MAX_BYTES": "lots"}, "EDGEMIRROR_BUFFER_MAX_BYTES"},
		{"aggregator without brokers", []string{"aggregator", "--check"}, nil, "--brokers"},
		{"bad template", []string{"aggregator", "--brokers", "a:1", "--topic-template", "{site}.{topic}"}, nil, "--topic-template"},
		{"template without topic", []string{"aggregator", "--brokers", "a:1", "--topic-template", "{edge}"}, nil, "--topic-template"},
		{"bad replication factor", []string{"aggregator", "--brokers", "a:1", "--hub-replication-factor", "0"}, nil, "--hub-replication-factor"},
		{"bad checkpoint topic", []string{"aggregator", "--brokers", "a:1", "--checkpoint-topic", "a/b"}, nil, "--checkpoint-topic"},
		{"bad sync groups", append(append([]string{}, agentOK...), "--sync-groups", "(("), nil, "--sync-groups"},
		{"short checkpoint interval", append(append([]string{}, agentOK...), "--sync-groups", "g", "--checkpoint-interval", "10ms"), nil, "--checkpoint-interval"},
		{"translate without hub", []string{"translate", "--edge", "e", "--topic", "t", "--partition", "0", "--offset", "1"}, nil, "--hub-brokers"},
		{"translate without offset", []string{"translate", "--hub-brokers", "h:1", "--edge", "e", "--topic", "t", "--partition", "0"}, nil, "--offset"},
		{"translate bad edge", []string{"translate", "--hub-brokers", "h:1", "--edge", "e e", "--topic", "t", "--partition", "0", "--offset", "1"}, nil, "--edge"},
		{"translate bad offset", []string{"translate", "--hub-brokers", "h:1", "--edge", "e", "--topic", "t", "--partition", "0", "--offset", "x"}, nil, "--offset"},
		{"translate-group without group", []string{"translate-group", "--hub-brokers", "h:1", "--edge", "e"}, nil, "--group"},
		{"translate-group bad edge brokers", []string{"translate-group", "--hub-brokers", "h:1", "--edge", "e", "--group", "g", "--edge-brokers", "nohost"}, nil, "--edge-brokers"},
		{"reset-group without time", []string{"reset-group", "--hub-brokers", "h:1", "--group", "g", "--topics", "t"}, nil, "--to-datetime"},
		{"reset-group bad time", []string{"reset-group", "--hub-brokers", "h:1", "--group", "g", "--topics", "t", "--to-datetime", "2026-12-01 10:00"}, nil, "--to-datetime"},
		{"reset-group without topics", []string{"reset-group", "--hub-brokers", "h:1", "--group", "g", "--to-datetime", "2026-12-01T10:00:00Z"}, nil, "--topics"},
		{"heartbeat too slow", append(append([]string{}, agentOK...), "--heartbeat-interval", "2h"), nil, "--heartbeat-interval"},
		{"heartbeat too fast", append(append([]string{}, agentOK...), "--heartbeat-interval", "1ms"), nil, "--heartbeat-interval"},
		{"bad status topic", []string{"aggregator", "--brokers", "a:1", "--status-topic", "bad topic"}, nil, "--status-topic"},
		{"same fleet topics", []string{"aggregator", "--brokers", "a:1", "--events-topic", "_edgemirror.status"}, nil, "--events-topic"},
		{"short disconnect", []string{"aggregator", "--brokers", "a:1", "--disconnect-after", "10ms"}, nil, "--disconnect-after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr, env(tt.env))
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(ue.message, tt.wantMsg) {
				t.Errorf("message %q does not mention %q", ue.message, tt.wantMsg)
			}
			if strings.Contains(ue.message, "\n") {
				t.Errorf("message is not one line: %q", ue.message)
			}
			if !strings.Contains(stderr.String(), "Try: edgemirror") {
				t.Errorf("no hint printed: %q", stderr.String())
			}
		})
	}
}

func TestEnvironmentAndPrecedence(t *testing.T) {
	var stdout bytes.Buffer
	e := env(map[string]string{
		"EDGEMIRROR_EDGE_ID":          "from-env",
		"EDGEMIRROR_BROKERS":          "127.0.0.1:9092",
		"EDGEMIRROR_AGGREGATOR":       "http://127.0.0.1:8080",
		"EDGEMIRROR_BUFFER_MAX_BYTES": "64MiB",
		"EDGEMIRROR_BANDWIDTH":        "4Mbit/s",
	})
	err := run(context.Background(), []string{"agent", "--check", "--edge-id", "from-flag"}, &stdout, &bytes.Buffer{}, e)
	if err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	for _, want := range []string{"edge-id=from-flag", "max 64MiB", "bandwidth=500000"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	for _, sub := range []string{"agent", "aggregator", "translate", "translate-group", "reset-group"} {
		var stdout bytes.Buffer
		err := run(context.Background(), []string{sub, "--help"}, &stdout, &bytes.Buffer{}, env(nil))
		if code := exitCode(err, &bytes.Buffer{}); code != 0 {
			t.Fatalf("%s --help: exit %d (%v)", sub, code, err)
		}
		help := stdout.String()
		want := map[string][]string{
			"agent": {"--edge-id", "--brokers", "--topics", "--exclude-topics", "--buffer-dir", "--buffer-max-bytes",
				"--buffer-full", "--aggregator", "--batch-bytes", "--linger", "--bandwidth", "--compression",
				"--compression-level", "--inflight", "--metrics-addr", "--log-level", "--log-format", "--heartbeat-interval",
				"(default 1GiB; env EDGEMIRROR_BUFFER_MAX_BYTES)", "(default 1MiB", "(default 1s", "(default zstd", "(default 8;",
				"--sync-groups", "--checkpoint-interval", "(default 30s; env EDGEMIRROR_CHECKPOINT_INTERVAL)"},
			"aggregator": {"--listen", "--brokers", "--state-dir", "--topic-template", "--hub-replication-factor",
				"--max-chunk-bytes", "--metrics-addr", "--log-level", "--log-format", "(default :8080", "(default {edge}.{topic}",
				"(default 16MiB", "--status-topic", "(default _edgemirror.status", "--events-topic", "--disconnect-after", "--behind-after", "--checkpoint-topic", "(default _edgemirror.checkpoints", "--sync-group-offsets"},
			"translate": {"--hub-brokers", "--edge", "--topic", "--partition", "--offset", "--topic-template", "--json",
				"env EDGEMIRROR_HUB_BROKERS"},
			"translate-group": {"--hub-brokers", "--edge", "--group", "--edge-brokers", "--topics", "--execute",
				"--checkpoint-topic", "(default _edgemirror.checkpoints"},
			"reset-group": {"--hub-brokers", "--group", "--topics", "--to-datetime", "--execute"},
		}[sub]
		for _, w := range want {
			if !strings.Contains(help, w) {
				t.Errorf("%s --help lacks %q", sub, w)
			}
		}
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "edgemirror "+version+" (commit "+commit+", built "+date+", ") ||
		!strings.Contains(stdout.String(), runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("version output %q", stdout.String())
	}
}

// The example environment files shipped in packaging/ must be valid.
func TestPackagedEnvFilesAreValid(t *testing.T) {
	for sub, file := range map[string]string{"agent": "agent.env.example", "aggregator": "aggregator.env.example"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "packaging", file))
		if err != nil {
			t.Fatal(err)
		}
		kv := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", file, line)
			}
			kv[k] = v
		}
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{sub, "--check"}, &stdout, &stderr, env(kv)); err != nil {
			t.Errorf("%s with %s: %v", sub, file, err)
		}
	}
}

// Every flag is documented in the README's flag tables.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"agent", "aggregator"} {
		var stdout bytes.Buffer
		_ = run(context.Background(), []string{sub, "--help"}, &stdout, &bytes.Buffer{}, env(nil))
		for _, line := range strings.Split(stdout.String(), "\n") {
			name, ok := strings.CutPrefix(strings.TrimSpace(line), "--")
			if !ok || name == "check" {
				continue
			}
			if !bytes.Contains(readme, []byte("`--"+name+"`")) {
				t.Errorf("README does not document %s --%s", sub, name)
			}
		}
	}
}

// TestCommandLineOnlyFlagIgnoresEnvironment: a flag that changes something
// (--execute) is never switched on by a variable left in the environment.
func TestCommandLineOnlyFlagIgnoresEnvironment(t *testing.T) {
	var execute, verbose bool
	c := newCommand("x", "", "")
	c.section("S")
	c.boolv(&execute, "execute", "do it")
	c.boolv(&verbose, "verbose", "talk")
	c.commandLineOnly("execute")
	env := map[string]string{"EDGEMIRROR_EXECUTE": "true", "EDGEMIRROR_VERBOSE": "true"}
	if err := c.parse(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if execute || !verbose {
		t.Errorf("execute %v (want false: command line only), verbose %v (want true from the environment)", execute, verbose)
	}
	if err := c.parse([]string{"--execute"}, func(k string) string { return env[k] }); err != nil || !execute {
		t.Errorf("--execute on the command line: %v, %v", execute, err)
	}
	var help strings.Builder
	c.usage(&help)
	if !strings.Contains(help.String(), "command line only") || strings.Contains(help.String(), "EDGEMIRROR_EXECUTE") {
		t.Errorf("help does not say --execute is command line only:\n%s", help.String())
	}
}
