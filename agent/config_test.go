package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

func validConfig() Config {
	c := DefaultConfig()
	c.EdgeID = "plant-7"
	c.Brokers = []string{"127.0.0.1:9092"}
	c.Aggregator = "http://aggregator.example:8080"
	return c
}

func TestDefaultConfigIsValidOnceRequiredFieldsAreSet(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config with edge id, brokers and aggregator: %v", err)
	}
	if _, err := New(c); err != nil {
		t.Fatalf("New: %v", err)
	}
	empty := DefaultConfig()
	if err := empty.Validate(); err == nil {
		t.Fatal("DefaultConfig without edge id validated")
	}
}

// TestConfigValidate checks that every invalid field is refused with a
// *ConfigError that names the flag the operator typed.
func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		flag   string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"empty edge id", func(c *Config) { c.EdgeID = "" }, "--edge-id"},
		{"edge id with space", func(c *Config) { c.EdgeID = "plant 7" }, "--edge-id"},
		{"edge id dot dot", func(c *Config) { c.EdgeID = ".." }, "--edge-id"},
		{"edge id too long", func(c *Config) { c.EdgeID = strings.Repeat("e", 65) }, "--edge-id"},
		{"edge id 64 chars", func(c *Config) { c.EdgeID = strings.Repeat("e", 64) }, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "--brokers"},
		{"broker without port", func(c *Config) { c.Brokers = []string{"kafka"} }, "--brokers"},
		{"empty broker", func(c *Config) { c.Brokers = []string{"a:1", ""} }, "--brokers"},
		{"bad topics regex", func(c *Config) { c.Topics = "(" }, "--topics"},
		{"bad exclude regex", func(c *Config) { c.ExcludeTopics = "[" }, "--exclude-topics"},
		{"empty buffer dir", func(c *Config) { c.BufferDir = "" }, "--buffer-dir"},
		{"buffer below minimum", func(c *Config) { c.BufferMaxBytes = buffer.MinMaxBytes - 1 }, "--buffer-max-bytes"},
		{"buffer at minimum", func(c *Config) { c.BufferMaxBytes = buffer.MinMaxBytes; c.BatchBytes = 64 << 10 }, ""},
		{"empty aggregator", func(c *Config) { c.Aggregator = "" }, "--aggregator"},
		{"ftp aggregator", func(c *Config) { c.Aggregator = "ftp://x:21" }, "--aggregator"},
		{"aggregator without host", func(c *Config) { c.Aggregator = "http://" }, "--aggregator"},
		{"aggregator host only", func(c *Config) { c.Aggregator = "aggregator:8080" }, "--aggregator"},
		{"https aggregator", func(c *Config) { c.Aggregator = "https://agg.example" }, ""},
		{"batch too small", func(c *Config) { c.BatchBytes = 1023 }, "--batch-bytes"},
		{"batch too big", func(c *Config) { c.BatchBytes = MaxBatchBytes + 1 }, "--batch-bytes"},
		{"batch over half the buffer", func(c *Config) { c.BufferMaxBytes = 4 << 20; c.BatchBytes = 2<<20 + 1 }, "--batch-bytes"},
		{"batch exactly half the buffer", func(c *Config) { c.BufferMaxBytes = 4 << 20; c.BatchBytes = 2 << 20 }, ""},
		{"zero linger", func(c *Config) { c.Linger = 0 }, "--linger"},
		{"negative bandwidth", func(c *Config) { c.Bandwidth = -1 }, "--bandwidth"},
		{"tiny bandwidth", func(c *Config) { c.Bandwidth = 1023 }, "--bandwidth"},
		{"1KiB/s bandwidth", func(c *Config) { c.Bandwidth = 1024 }, ""},
		{"zero inflight", func(c *Config) { c.Inflight = 0 }, "--inflight"},
		{"too many inflight", func(c *Config) { c.Inflight = MaxInflight + 1 }, "--inflight"},
		{"metadata interval too short", func(c *Config) { c.MetadataInterval = 99 * time.Millisecond }, "--metadata-interval"},
		{"fetch max bytes too small", func(c *Config) { c.FetchMaxBytes = 64<<10 - 1 }, "--fetch-max-bytes"},
		{"zero request timeout", func(c *Config) { c.RequestTimeout = 0 }, "--request-timeout"},
		{"zero max backoff", func(c *Config) { c.MaxBackoff = 0 }, "--max-backoff"},
		{"zero loss interval", func(c *Config) { c.LossInterval = 0 }, "LossInterval"},
		{"unknown codec", func(c *Config) { c.Compression = wire.Codec(42) }, "--compression"},
		{"unknown level", func(c *Config) { c.CompressionLevel = wire.Level(9) }, "--compression-level"},
		{"no compression", func(c *Config) { c.Compression = wire.CodecNone }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %s, got none", tc.flag)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
			}
			if ce.Field != tc.flag {
				t.Errorf("field %q, want %q", ce.Field, tc.flag)
			}
			if !strings.HasPrefix(err.Error(), tc.flag+": ") {
				t.Errorf("message %q does not start with the flag %s", err, tc.flag)
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

// TestConfigValidateBufferPolicy: Validate promises to check every field,
// so an unknown --buffer-full policy must be refused there and not only
// when Run opens the buffer.
func TestConfigValidateBufferPolicy(t *testing.T) {
	c := validConfig()
	c.BufferFull = buffer.Policy(7)
	var ce *ConfigError
	if err := c.Validate(); !errors.As(err, &ce) || ce.Field != "--buffer-full" {
		t.Fatalf("Validate = %v, want a *ConfigError for --buffer-full", err)
	}
}

func TestParseStartOffset(t *testing.T) {
	for _, s := range []string{"earliest", "latest"} {
		so, err := ParseStartOffset(s)
		if err != nil || so.String() != s {
			t.Errorf("ParseStartOffset(%q) = %v, %v", s, so, err)
		}
	}
	if _, err := ParseStartOffset("newest"); err == nil {
		t.Error("ParseStartOffset accepted \"newest\"")
	}
}
