package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// postTopicConfigs sends a topic config report for edge and returns the
// status and the decoded answer (a TopicConfigResponse on 200, else an
// ErrorResponse).
func (s *testServer) postTopicConfigs(t *testing.T, edge string, body any) (int, wire.TopicConfigResponse, wire.ErrorResponse) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.url+wire.PathTopicConfigs, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderEdge, edge)
	req.Header.Set("Content-Type", wire.ContentTypeJSON)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ok wire.TopicConfigResponse
	var bad wire.ErrorResponse
	if resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, &ok)
	} else {
		err = json.Unmarshal(b, &bad)
	}
	if err != nil {
		t.Fatalf("answer %d %q: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, ok, bad
}

// hubOverrides returns the settings set on a hub topic itself, as the hub
// reports them (franz-go's admin client, not the product's code).
func hubOverrides(t *testing.T, hub *kfake.Cluster, topic string) map[string]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(hub.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Err != nil {
		t.Fatalf("describe %s: %v", topic, rc.Err)
	}
	out := make(map[string]string)
	for _, c := range rc.Configs {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			out[c.Key] = c.MaybeValue()
		}
	}
	return out
}

func wantSettings(t *testing.T, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Fatalf("hub topic settings:\n got  %v\n want %v", got, want)
	}
}

func TestTopicConfigReportCreatesAndSyncsHubTopic(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) {
		c.HubTopicConfigs = map[string]string{"retention.ms": "2592000000", "min.insync.replicas": "1"}
	})
	report := wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "state", Partitions: 2, Configs: map[string]string{
		"cleanup.policy": "compact", "min.compaction.lag.ms": "60000", "delete.retention.ms": "3600000",
		"retention.ms": "86400000", // the --hub-topic-config value wins
	}}}}
	code, res, _ := s.postTopicConfigs(t, "plant-7", report)
	if code != 200 || len(res.Topics) != 1 || res.Topics[0].HubTopic != "plant-7.state" || res.Topics[0].Error != "" || len(res.Topics[0].Refused) != 0 {
		t.Fatalf("first report: %d %+v", code, res)
	}
	if n := describeHubTopic(t, context.Background(), hub, "plant-7.state"); n != 2 {
		t.Fatalf("hub topic has %d partitions, want 2", n)
	}
	wantSettings(t, hubOverrides(t, hub, "plant-7.state"), map[string]string{
		"message.timestamp.type": "CreateTime", "cleanup.policy": "compact", "min.compaction.lag.ms": "60000",
		"delete.retention.ms": "3600000", "retention.ms": "2592000000", "min.insync.replicas": "1",
	})

	// The edge changes one override and drops another: the hub follows, the
	// dropped one goes back to the hub's default, the operator's value stays.
	report.Topics[0].Configs = map[string]string{"cleanup.policy": "compact,delete", "min.compaction.lag.ms": "1000", "retention.ms": "1"}
	code, res, _ = s.postTopicConfigs(t, "plant-7", report)
	if code != 200 || res.Topics[0].Error != "" || len(res.Topics[0].Refused) != 0 {
		t.Fatalf("second report: %d %+v", code, res)
	}
	wantSettings(t, hubOverrides(t, hub, "plant-7.state"), map[string]string{
		"message.timestamp.type": "CreateTime", "cleanup.policy": "compact,delete", "min.compaction.lag.ms": "1000",
		"retention.ms": "2592000000", "min.insync.replicas": "1",
	})
	if got := metricValue(t, s.m.topicConfigChanges.WithLabelValues("set")); got != 2 {
		t.Errorf("settings changed: %v, want 2 (cleanup.policy, min.compaction.lag.ms)", got)
	}
	if got := metricValue(t, s.m.topicConfigChanges.WithLabelValues("delete")); got != 1 {
		t.Errorf("settings removed: %v, want 1 (delete.retention.ms)", got)
	}

	// The same report again changes nothing.
	s.postTopicConfigs(t, "plant-7", report)
	if got := metricValue(t, s.m.topicConfigChanges.WithLabelValues("set")); got != 2 {
		t.Errorf("an unchanged report changed settings: %v set", got)
	}
}

func TestTopicConfigChunkFirstThenReport(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.HubTopicConfigs = map[string]string{"retention.ms": "5000000"} })
	fb := newFrameBuilder(t)
	if a := s.send(t, "e1", 1, 1, fb.frame(chunkOf(1, []wire.Topic{{Name: "m", Partitions: 1}}, sensorRecords("m", 0, 0, 10)))); a.status != 200 {
		t.Fatalf("chunk: %v", a)
	}
	// Created by the chunk: only what the aggregator knows without the edge.
	wantSettings(t, hubOverrides(t, hub, "e1.m"), map[string]string{"message.timestamp.type": "CreateTime", "retention.ms": "5000000"})
	code, res, _ := s.postTopicConfigs(t, "e1", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}}})
	if code != 200 || res.Topics[0].Error != "" {
		t.Fatalf("report: %d %+v", code, res)
	}
	wantSettings(t, hubOverrides(t, hub, "e1.m"), map[string]string{"message.timestamp.type": "CreateTime", "retention.ms": "5000000", "cleanup.policy": "compact"})
}

// refuseKey makes the hub answer INVALID_CONFIG to every
// IncrementalAlterConfigs request that sets key, as a broker does for a
// value it does not accept.
func refuseKey(hub *kfake.Cluster, key string) {
	hub.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		hub.KeepControl()
		req := kr.(*kmsg.IncrementalAlterConfigsRequest)
		refuse := false
		for _, r := range req.Resources {
			for _, c := range r.Configs {
				refuse = refuse || c.Name == key
			}
		}
		if !refuse {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
		for _, r := range req.Resources {
			rr := kmsg.NewIncrementalAlterConfigsResponseResource()
			rr.ResourceName, rr.ResourceType, rr.ErrorCode = r.ResourceName, r.ResourceType, kerr.InvalidConfig.Code
			msg := "value not allowed for " + key
			rr.ErrorMessage = &msg
			resp.Resources = append(resp.Resources, rr)
		}
		return resp, nil, true
	})
}

func TestTopicConfigRefusedKeyIsReportedAndRecordsFlow(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	fb := newFrameBuilder(t)
	if a := s.send(t, "e1", 1, 1, fb.frame(chunkOf(1, []wire.Topic{{Name: "m", Partitions: 1}}, sensorRecords("m", 0, 0, 10)))); a.status != 200 {
		t.Fatalf("chunk: %v", a)
	}
	refuseKey(hub, "segment.ms")
	report := wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1,
		Configs: map[string]string{"cleanup.policy": "compact", "segment.ms": "100", "retention.bytes": "1000000"}}}}
	code, res, _ := s.postTopicConfigs(t, "e1", report)
	if code != 200 || res.Topics[0].Error != "" {
		t.Fatalf("report: %d %+v", code, res)
	}
	if r := res.Topics[0].Refused; len(r) != 1 || r[0].Key != "segment.ms" || r[0].Value != "100" || !strings.Contains(r[0].Error, "INVALID_CONFIG") && !strings.Contains(r[0].Error, "nvalid") {
		t.Fatalf("refused: %+v, want segment.ms only", r)
	}
	// The other settings were applied one by one.
	wantSettings(t, hubOverrides(t, hub, "e1.m"), map[string]string{"message.timestamp.type": "CreateTime", "cleanup.policy": "compact", "retention.bytes": "1000000"})
	if got := metricValue(t, s.m.topicConfigRefused.WithLabelValues("segment.ms")); got != 1 {
		t.Errorf("refused segment.ms counted %v times, want 1", got)
	}
	// Records keep flowing to that topic.
	if a := s.send(t, "e1", 1, 1, fb.frame(chunkOf(2, []wire.Topic{{Name: "m", Partitions: 1}}, sensorRecords("m", 0, 10, 10)))); a.status != 200 || a.ok.Written != 10 {
		t.Fatalf("chunk after refusal: %v", a)
	}
	// At the next sync the refused key is tried again (and counted again).
	if _, res, _ = s.postTopicConfigs(t, "e1", report); len(res.Topics[0].Refused) != 1 {
		t.Fatalf("second report: %+v", res)
	}
	if got := metricValue(t, s.m.topicConfigRefused.WithLabelValues("segment.ms")); got != 2 {
		t.Errorf("refused segment.ms counted %v times, want 2", got)
	}
}

func TestTopicConfigCreateRefusedFallsBack(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	// The hub refuses to create a topic with max.message.bytes set.
	hub.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		hub.KeepControl()
		req := kr.(*kmsg.CreateTopicsRequest)
		for _, rt := range req.Topics {
			for _, c := range rt.Configs {
				if c.Name == "max.message.bytes" {
					resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
					st := kmsg.NewCreateTopicsResponseTopic()
					st.Topic, st.ErrorCode = rt.Topic, kerr.InvalidConfig.Code
					resp.Topics = append(resp.Topics, st)
					return resp, nil, true
				}
			}
		}
		return nil, nil, false
	})
	refuseKey(hub, "max.message.bytes")
	code, res, _ := s.postTopicConfigs(t, "e1", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "big", Partitions: 3,
		Configs: map[string]string{"cleanup.policy": "compact", "max.message.bytes": "99999999"}}}})
	if code != 200 || res.Topics[0].Error != "" {
		t.Fatalf("report: %d %+v", code, res)
	}
	if r := res.Topics[0].Refused; len(r) != 1 || r[0].Key != "max.message.bytes" {
		t.Fatalf("refused: %+v", r)
	}
	if n := describeHubTopic(t, context.Background(), hub, "e1.big"); n != 3 {
		t.Fatalf("hub topic has %d partitions, want 3", n)
	}
	wantSettings(t, hubOverrides(t, hub, "e1.big"), map[string]string{"message.timestamp.type": "CreateTime", "cleanup.policy": "compact"})
}

func TestTopicConfigSyncOff(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", func(c *Config) { c.SyncTopicConfigs = false })
	code, res, _ := s.postTopicConfigs(t, "e1", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}}})
	if code != 200 || len(res.Topics) != 1 || !res.Topics[0].Ignored {
		t.Fatalf("report: %d %+v", code, res)
	}
	if n, _, err := s.hub.describe(context.Background(), "e1.m"); err != nil || n != 0 {
		t.Fatalf("a report created a hub topic although sync is off (%d partitions, %v)", n, err)
	}
}

func TestTopicConfigReportRejected(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	for _, tc := range []struct {
		name string
		body any
		want int
	}{
		{"not synced key", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1, Configs: map[string]string{"min.insync.replicas": "2"}}}}, 400},
		{"timestamp type", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1, Configs: map[string]string{"message.timestamp.type": "LogAppendTime"}}}}, 400},
		{"bad topic", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "a/b", Partitions: 1}}}, 400},
		{"no partitions", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m"}}}, 400},
		{"empty value", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1, Configs: map[string]string{"retention.ms": ""}}}}, 400},
		{"twice", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1}, {Topic: "m", Partitions: 1}}}, 400},
		{"not json", "{", 400},
		{"too many", wire.TopicConfigReport{Topics: slices.Repeat([]wire.TopicConfig{{Topic: "m", Partitions: 1}}, wire.MaxTopicConfigTopics+1)}, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if s, ok := body.(string); ok {
				body = json.RawMessage(s)
			}
			var code int
			var bad wire.ErrorResponse
			if raw, ok := body.(json.RawMessage); ok {
				req, _ := http.NewRequest(http.MethodPost, s.url+wire.PathTopicConfigs, bytes.NewReader(raw))
				req.Header.Set(wire.HeaderEdge, "e1")
				resp, err := s.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				code = resp.StatusCode
				_ = json.NewDecoder(resp.Body).Decode(&bad)
				resp.Body.Close()
			} else {
				code, _, bad = s.postTopicConfigs(t, "e1", body)
			}
			if code != tc.want || !bad.Permanent || bad.Error == "" {
				t.Fatalf("got %d %+v, want %d permanent", code, bad, tc.want)
			}
		})
	}
	if n, _, err := s.hub.describe(context.Background(), "e1.m"); err != nil || n != 0 {
		t.Fatalf("a rejected report created a hub topic (%d partitions, %v)", n, err)
	}
}

func TestPlanTopicConfigs(t *testing.T) {
	for _, tc := range []struct {
		current, want map[string]string
		plan          string
	}{
		{nil, nil, ""},
		{map[string]string{"cleanup.policy": "compact"}, map[string]string{"cleanup.policy": "compact"}, ""},
		{nil, map[string]string{"cleanup.policy": "compact", "retention.ms": "1"}, "set cleanup.policy=compact; set retention.ms=1"},
		{map[string]string{"retention.ms": "2"}, map[string]string{"retention.ms": "1"}, "set retention.ms=1"},
		// A synced key the edge no longer overrides is removed; others stay.
		{map[string]string{"retention.ms": "2", "min.insync.replicas": "2", "message.timestamp.type": "CreateTime"}, nil, "delete retention.ms"},
	} {
		var parts []string
		for _, op := range planTopicConfigs(tc.current, tc.want) {
			if op.del {
				parts = append(parts, "delete "+op.key)
			} else {
				parts = append(parts, fmt.Sprintf("set %s=%s", op.key, op.value))
			}
		}
		if got := strings.Join(parts, "; "); got != tc.plan {
			t.Errorf("plan(%v → %v) = %q, want %q", tc.current, tc.want, got, tc.plan)
		}
	}
}

func TestDesiredTopicConfigs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HubTopicConfigs = map[string]string{"retention.ms": "9"}
	edge := map[string]string{"retention.ms": "1", "cleanup.policy": "compact", "unclean.leader.election.enable": "true"}
	wantSettings(t, desiredTopicConfigs(&cfg, edge), map[string]string{"retention.ms": "9", "cleanup.policy": "compact"})
	cfg.SyncTopicConfigs = false
	wantSettings(t, desiredTopicConfigs(&cfg, edge), map[string]string{"retention.ms": "9"})

	// max.message.bytes never drops below what hub records and the
	// aggregator's batches need.
	cfg = DefaultConfig()
	for _, tc := range []struct{ edge, hub string }{
		{"1048588", strconv.Itoa(1048588 + maxMessageMargin)},
		{"1000", strconv.Itoa(cfg.HubBatchBytes + maxMessageMargin)},
		{"2147483647", "2147483647"},
		{"lots", "lots"},
	} {
		got := desiredTopicConfigs(&cfg, map[string]string{"max.message.bytes": tc.edge})["max.message.bytes"]
		if got != tc.hub {
			t.Errorf("edge max.message.bytes %s → hub %s, want %s", tc.edge, got, tc.hub)
		}
	}
	// The operator's value is taken as it is.
	cfg.HubTopicConfigs = map[string]string{"max.message.bytes": "1000"}
	if got := desiredTopicConfigs(&cfg, map[string]string{"max.message.bytes": "5000000"})["max.message.bytes"]; got != "1000" {
		t.Errorf("--hub-topic-config max.message.bytes=1000 gave %s", got)
	}
}

// A chunk creates the hub topic while a report for it is applied (the
// report's CreateTopics then finds it existing, without the settings): the
// report must not take that creation for its own.
func TestTopicConfigReportRacesChunkCreation(t *testing.T) {
	hub := newHubCluster(t)
	s := newTestServer(t, hub, "", nil)
	// The hub creates the topic as the chunk's request would have: without
	// the report's settings.
	hub.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		req := kr.(*kmsg.CreateTopicsRequest)
		for i := range req.Topics {
			req.Topics[i].Configs = nil
		}
		return nil, nil, false
	})
	code, res, _ := s.postTopicConfigs(t, "e1", wire.TopicConfigReport{Topics: []wire.TopicConfig{{Topic: "m", Partitions: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}}})
	if code != 200 || res.Topics[0].Error != "" || len(res.Topics[0].Refused) != 0 {
		t.Fatalf("report: %d %+v", code, res)
	}
	if got := hubOverrides(t, hub, "e1.m"); got["cleanup.policy"] != "compact" {
		t.Fatalf("hub topic settings %v: the report's settings were lost to the concurrent creation", got)
	}
}
