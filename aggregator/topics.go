package aggregator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// ensureTopic makes sure the hub topic exists with at least partitions
// partitions, each with a leader.
func (h *hub) ensureTopic(ctx context.Context, topic string, partitions int32) error {
	if partitions <= 0 {
		return badChunk("chunk gives no partition count for the source of %s", topic)
	}
	h.mu.Lock()
	have := h.topics[topic]
	h.mu.Unlock()
	if have >= partitions {
		return nil
	}
	n, leaders, err := h.describe(ctx, topic)
	if err != nil {
		return err
	}
	switch {
	case n == 0:
		res, err := h.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic:             topic,
			NumPartitions:     int(partitions),
			ReplicationFactor: h.cfg.HubReplicationFactor,
			ConfigEntries:     []kafka.ConfigEntry{{ConfigName: "message.timestamp.type", ConfigValue: "CreateTime"}},
		}}})
		if err == nil {
			if e := res.Errors[topic]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
				err = e
			}
		}
		if err != nil {
			return hubUnavailable("create hub topic %s: %v", topic, err)
		}
		h.log.Info("created hub topic", slog.String("topic", topic), slog.Int("partitions", int(partitions)))
	case n < partitions:
		res, err := h.client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{
			Name: topic, Count: partitions,
		}}})
		if err == nil && res.Errors[topic] != nil {
			err = res.Errors[topic]
		}
		if err != nil {
			return hubUnavailable("grow hub topic %s to %d partitions: %v", topic, partitions, err)
		}
		h.log.Info("grew hub topic", slog.String("topic", topic), slog.Int("from", int(n)), slog.Int("to", int(partitions)))
	default:
		if leaders {
			h.mu.Lock()
			h.topics[topic] = n
			h.mu.Unlock()
			return nil
		}
	}
	// Creation is asynchronous: wait until every partition has a leader,
	// since kafka-go fails a produce to a leaderless partition without
	// retrying (kafka-go #1208).
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, leaders, err := h.describe(ctx, topic)
		if err == nil && n >= partitions && leaders {
			h.mu.Lock()
			h.topics[topic] = n
			h.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return hubUnavailable("hub topic %s has no leader for every partition yet", topic)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// describe returns a hub topic's partition count (0 if it does not exist)
// and whether every partition has a leader.
func (h *hub) describe(ctx context.Context, topic string) (int32, bool, error) {
	md, err := h.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, false, hubUnavailable("describe hub topic %s: %v", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return 0, false, nil
			}
			return 0, false, hubUnavailable("describe hub topic %s: %v", topic, t.Error)
		}
		leaders := true
		for _, p := range t.Partitions {
			if p.Leader.ID < 0 || p.Leader.Host == "" || p.Error != nil {
				leaders = false
			}
		}
		return int32(len(t.Partitions)), leaders, nil
	}
	return 0, false, nil
}
