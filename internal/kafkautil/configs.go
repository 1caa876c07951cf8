package kafkautil

import (
	"fmt"

	"github.com/segmentio/kafka-go"
)

// ConfigSourceTopic is DescribeConfigs' DYNAMIC_TOPIC_CONFIG: a value set on
// the topic itself, as opposed to a broker setting (sources 2-4) or a
// default (5).
const ConfigSourceTopic = 1

// TopicOverrides picks the settings of topic that are set on the topic
// itself out of a DescribeConfigs answer. Only the config source the broker
// answers decides: a value the broker reports as a broker setting or a
// default is not an override, even when it differs from Kafka's built-in
// default. DescribeConfigs v0 (brokers before 1.1) carries no source; then
// IsDefault=false is all the broker says, and is taken as an override.
// Sensitive settings are never returned.
func TopicOverrides(res *kafka.DescribeConfigsResponse, topic string) (map[string]string, error) {
	for _, r := range res.Resources {
		if r.ResourceName != topic {
			continue
		}
		if r.Error != nil {
			return nil, fmt.Errorf("describe configs of topic %s: %w", topic, r.Error)
		}
		out := make(map[string]string)
		for _, e := range r.ConfigEntries {
			if e.IsSensitive {
				continue
			}
			if e.ConfigSource == ConfigSourceTopic || (e.ConfigSource == 0 && !e.IsDefault) {
				out[e.ConfigName] = e.ConfigValue
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("describe configs of topic %s: not in the answer", topic)
}
