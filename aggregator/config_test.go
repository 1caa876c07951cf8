package aggregator

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		flag   string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"empty listen", func(c *Config) { c.Listen = "" }, "--listen"},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "--brokers"},
		{"broker without port", func(c *Config) { c.Brokers = []string{"hub"} }, "--brokers"},
		{"empty broker", func(c *Config) { c.Brokers = []string{"a:1", ""} }, "--brokers"},
		{"empty state dir", func(c *Config) { c.StateDir = "" }, "--state-dir"},
		{"template without topic", func(c *Config) { c.TopicTemplate = "{edge}" }, "--topic-template"},
		{"template with unknown field", func(c *Config) { c.TopicTemplate = "{site}.{topic}" }, "--topic-template"},
		{"template with slash", func(c *Config) { c.TopicTemplate = "{edge}/{topic}" }, "--topic-template"},
		{"template without edge", func(c *Config) { c.TopicTemplate = "{topic}" }, "--topic-template"},
		{"replication factor zero", func(c *Config) { c.HubReplicationFactor = 0 }, "--hub-replication-factor"},
		{"replication factor -2", func(c *Config) { c.HubReplicationFactor = -2 }, "--hub-replication-factor"},
		{"replication factor too big", func(c *Config) { c.HubReplicationFactor = 32768 }, "--hub-replication-factor"},
		{"replication factor 3", func(c *Config) { c.HubReplicationFactor = 3 }, ""},
		{"chunk limit too small", func(c *Config) { c.MaxChunkBytes = 64<<10 - 1 }, "--max-chunk-bytes"},
		{"chunk limit too big", func(c *Config) { c.MaxChunkBytes = 1<<30 + 1; c.MaxRawBytes = 2 << 30 }, "--max-chunk-bytes"},
		{"raw limit below chunk limit", func(c *Config) { c.MaxRawBytes = c.MaxChunkBytes - 1 }, "--max-raw-bytes"},
		{"raw limit too big", func(c *Config) { c.MaxRawBytes = 2<<30 + 1 }, "--max-raw-bytes"},
		{"hub batch too small", func(c *Config) { c.HubBatchBytes = 1023 }, "--hub-batch-bytes"},
		{"zero order wait", func(c *Config) { c.OrderWait = 0 }, "--order-wait"},
		{"transaction timeout too short", func(c *Config) { c.TransactionTimeout = 500 * time.Millisecond }, "--transaction-timeout"},
		{"transaction timeout above the hub's maximum", func(c *Config) { c.TransactionTimeout = 16 * time.Minute }, "--transaction-timeout"},
		{"transaction timeout not above hub timeout", func(c *Config) { c.TransactionTimeout = c.HubTimeout }, "--transaction-timeout"},
		{"zero group chunks", func(c *Config) { c.MaxGroupChunks = 0 }, "--max-group-chunks"},
		{"negative group linger", func(c *Config) { c.GroupLinger = -time.Millisecond }, "--group-linger"},
		{"group linger above 1s", func(c *Config) { c.GroupLinger = 2 * time.Second }, "--group-linger"},
		{"empty transactional id prefix", func(c *Config) { c.TransactionalIDPrefix = "" }, ""},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "--shutdown-timeout"},
		{"hub timeout below 1s", func(c *Config) { c.HubTimeout = 999 * time.Millisecond }, "--hub-timeout"},
		{"zero parallel partitions", func(c *Config) { c.ParallelPartitions = 0 }, "--parallel-partitions"},
		{"all interfaces without credentials", func(c *Config) { c.Listen = ":8080" }, "--listen"},
		{"public address without TLS", func(c *Config) { c.Listen = "10.1.2.3:8080"; c.EdgesFile = "edges" }, "--listen"},
		{"all interfaces, accepting any edge", func(c *Config) { c.Listen = ":8080"; c.InsecureAcceptAnyEdge = true }, ""},
		{"all interfaces with edges file and TLS", func(c *Config) {
			c.Listen = "0.0.0.0:8080"
			c.EdgesFile, c.TLSCert, c.TLSKey = "edges", "cert.pem", "key.pem"
		}, ""},
		{"localhost", func(c *Config) { c.Listen = "localhost:8080" }, ""},
		{"tls cert without key", func(c *Config) { c.TLSCert = "cert.pem" }, "--tls-cert"},
		{"client CA without TLS", func(c *Config) { c.ClientCA = "ca.pem" }, "--client-ca"},
		{"kafka CA without kafka TLS", func(c *Config) { c.Kafka.CAFile = "ca.pem" }, "--kafka-tls"},
		{"sasl without user", func(c *Config) { c.Kafka.SASLMechanism = "plain"; c.Kafka.SASLPasswordFile = "pw" }, "--kafka-tls"},
		{"decoded budget below one chunk", func(c *Config) { c.MaxDecodedBytes = c.MaxRawBytes }, "--max-decoded-bytes"},
		{"zero edge requests", func(c *Config) { c.MaxEdgeRequests = 0 }, "--max-edge-requests"},
		{"negative rate", func(c *Config) { c.EdgeRequestRate = -1 }, "--edge-request-rate"},
		{"tiny read timeout", func(c *Config) { c.ReadTimeout = time.Millisecond }, "--read-timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Brokers = []string{"127.0.0.1:9092"}
			c.Listen = "127.0.0.1:8080"
			tc.mutate(&c)
			err := c.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *ConfigError naming %s", err, err, tc.flag)
			}
			if ce.Field != tc.flag || !strings.HasPrefix(err.Error(), tc.flag+": ") {
				t.Errorf("error %q names %q, want %s", err, ce.Field, tc.flag)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if _, nerr := New(c); !errors.Is(nerr, ErrInvalidConfig) {
				t.Errorf("New accepted the config: %v", nerr)
			}
		})
	}
}

func TestValidateTemplate(t *testing.T) {
	cases := []struct {
		tmpl string
		ok   bool
		msg  string
	}{
		{"{edge}.{topic}", true, ""},
		{"{topic}", false, "must contain {edge}"},
		{"mirror.{topic}", false, "must contain {edge}"},
		{"mirror_{edge}-{topic}", true, ""},
		{"{topic}.{edge}.v1", true, ""},
		{"{edge}", false, "must contain {topic}"},
		{"", false, "must contain {topic}"},
		{"{edge}.{Topic}", false, "only {edge} and {topic}"},
		{"{edge}.{topic}}", false, "only {edge} and {topic}"},
		{"{{topic}", false, "only {edge} and {topic}"},
		{"{edge} {topic}", false, "not allowed"},
		{"{edge}:{topic}", false, "not allowed"},
		{"édge.{topic}", false, "not allowed"},
	}
	for _, tc := range cases {
		err := validateTemplate(tc.tmpl)
		if tc.ok != (err == nil) {
			t.Errorf("validateTemplate(%q) = %v, want ok=%v", tc.tmpl, err, tc.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("validateTemplate(%q) = %q, want it to mention %q", tc.tmpl, err, tc.msg)
		}
	}
}

func TestDestTopic(t *testing.T) {
	long := strings.Repeat("t", 249)
	cases := []struct {
		tmpl, edge, topic string
		want              string // "" = error
	}{
		{"{edge}.{topic}", "plant-7", "sensors", "plant-7.sensors"},
		{"{topic}", "plant-7", "sensors", "sensors"},
		{"{topic}.{edge}.{topic}", "e", "t", "t.e.t"},
		{"m_{edge}-{topic}", "ship_1", "a.b-c", "m_ship_1-a.b-c"},
		{"{topic}", "e", long, long},                           // 249: the longest legal name
		{"{edge}.{topic}", "e", long[:247], "e." + long[:247]}, // exactly 249
		{"{edge}.{topic}", "e", long[:248], ""},                // 250
		{"{edge}.{topic}", "bad edge", "t", ""},                // never reaches the hub with a space
	}
	for _, tc := range cases {
		got, err := destTopic(tc.tmpl, tc.edge, tc.topic)
		if tc.want == "" {
			if err == nil {
				t.Errorf("destTopic(%q, %q, %q) = %q, want an error", tc.tmpl, tc.edge, tc.topic, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("destTopic(%q, %q, %q) = %q, %v; want %q", tc.tmpl, tc.edge, tc.topic, got, err, tc.want)
		}
	}
}
