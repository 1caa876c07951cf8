package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestHubTopicConfigFlag(t *testing.T) {
	base := []string{"aggregator", "--brokers", "127.0.0.1:9092", "--listen", "127.0.0.1:8080", "--check"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in the --check output
	}{
		{"repeated, comma in value", []string{"--hub-topic-config", "cleanup.policy=compact,delete", "--hub-topic-config", "retention.ms=2592000000"}, nil,
			"sync-topic-configs=true hub-topic-config=cleanup.policy=compact,delete;retention.ms=2592000000"},
		{"later use of a key wins", []string{"--hub-topic-config", "retention.ms=1", "--hub-topic-config", "retention.ms=2"}, nil, "hub-topic-config=retention.ms=2\n"},
		{"from the environment", nil, map[string]string{"EDGEMIRROR_HUB_TOPIC_CONFIG": "retention.ms=5; min.insync.replicas=2"},
			"hub-topic-config=min.insync.replicas=2;retention.ms=5"},
		{"flag wins over environment", []string{"--hub-topic-config", "retention.ms=7"}, map[string]string{"EDGEMIRROR_HUB_TOPIC_CONFIG": "segment.ms=1"},
			"hub-topic-config=retention.ms=7\n"},
		{"sync off", []string{"--sync-topic-configs=false"}, nil, "sync-topic-configs=false"},
		{"sync off from the environment", nil, map[string]string{"EDGEMIRROR_SYNC_TOPIC_CONFIGS": "false"}, "sync-topic-configs=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			if err := run(context.Background(), append(append([]string{}, base...), tc.args...), &stdout, &bytes.Buffer{}, env(tc.env)); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stdout.String(), tc.want) {
				t.Errorf("output %q lacks %q", stdout.String(), tc.want)
			}
		})
	}
	for _, tc := range []struct{ value, want string }{
		{"retention.ms", "KEY=VALUE"},
		{"=5", "KEY=VALUE"},
		{"retention.ms=", "KEY=VALUE"},
		{"Retention.MS=5", "not a topic config name"},
		{"message.timestamp.type=LogAppendTime", "always CreateTime"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), append(append([]string{}, base...), "--hub-topic-config", tc.value), &bytes.Buffer{}, &stderr, env(nil))
		var ue *usageError
		if !errors.As(err, &ue) || exitCode(err, &stderr) != 2 || !strings.Contains(ue.message, "--hub-topic-config") || !strings.Contains(ue.message, tc.want) {
			t.Errorf("--hub-topic-config %q: %v, want a usage error naming the flag and %q", tc.value, err, tc.want)
		}
	}
}

func TestSyncTopicConfigsHelp(t *testing.T) {
	for sub, want := range map[string][]string{
		"agent":      {"--sync-topic-configs", "(default true; env EDGEMIRROR_SYNC_TOPIC_CONFIGS)", "never broker defaults"},
		"aggregator": {"--sync-topic-configs", "--hub-topic-config", "env EDGEMIRROR_HUB_TOPIC_CONFIG", "Hub topic settings:"},
	} {
		var stdout bytes.Buffer
		_ = run(context.Background(), []string{sub, "--help"}, &stdout, &bytes.Buffer{}, env(nil))
		for _, w := range want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("%s --help lacks %q", sub, w)
			}
		}
	}
	// The agent can turn the sync off.
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"agent", "--edge-id", "e1", "--brokers", "127.0.0.1:9092", "--aggregator", "http://127.0.0.1:8080",
		"--sync-topic-configs=false", "--check"}, &stdout, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "sync-topic-configs=false") {
		t.Errorf("agent --check output %q does not show the sync turned off", stdout.String())
	}
}
