package kafkautil

import (
	"errors"
	"maps"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTopicOverrides(t *testing.T) {
	entry := func(name, value string, source int8) kafka.DescribeConfigResponseConfigEntry {
		return kafka.DescribeConfigResponseConfigEntry{ConfigName: name, ConfigValue: value, ConfigSource: source}
	}
	res := &kafka.DescribeConfigsResponse{Resources: []kafka.DescribeConfigResponseResource{
		{ResourceName: "other", ConfigEntries: []kafka.DescribeConfigResponseConfigEntry{entry("retention.ms", "1", 1)}},
		{ResourceName: "state", ConfigEntries: []kafka.DescribeConfigResponseConfigEntry{
			entry("cleanup.policy", "compact", 1),        // DYNAMIC_TOPIC_CONFIG: an override
			entry("retention.bytes", "1099511627776", 3), // DYNAMIC_DEFAULT_BROKER_CONFIG
			entry("segment.ms", "100", 2),                // DYNAMIC_BROKER_CONFIG
			entry("log.retention.hours", "168", 4),       // STATIC_BROKER_CONFIG
			entry("compression.type", "producer", 5),     // DEFAULT_CONFIG
			{ConfigName: "secret", ConfigValue: "x", ConfigSource: 1, IsSensitive: true},
		}},
		// DescribeConfigs v0 carries no source, only IsDefault.
		{ResourceName: "old", ConfigEntries: []kafka.DescribeConfigResponseConfigEntry{
			{ConfigName: "retention.ms", ConfigValue: "5"},
			{ConfigName: "segment.ms", ConfigValue: "9", IsDefault: true},
		}},
		{ResourceName: "gone", Error: kafka.UnknownTopicOrPartition},
	}}
	for topic, want := range map[string]map[string]string{
		"state": {"cleanup.policy": "compact"},
		"old":   {"retention.ms": "5"},
		"other": {"retention.ms": "1"},
	} {
		got, err := TopicOverrides(res, topic)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("%s: %v, %v; want %v", topic, got, err, want)
		}
	}
	if _, err := TopicOverrides(res, "gone"); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Errorf("gone: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	if _, err := TopicOverrides(res, "missing"); err == nil {
		t.Error("a topic missing from the answer gave no error")
	}
}
