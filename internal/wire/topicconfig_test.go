package wire

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestSyncedTopicConfigsSorted(t *testing.T) {
	// IsSyncedTopicConfig binary-searches the list.
	if !slices.IsSorted(SyncedTopicConfigs) {
		t.Fatalf("SyncedTopicConfigs is not sorted: %v", SyncedTopicConfigs)
	}
	for _, k := range SyncedTopicConfigs {
		if !IsSyncedTopicConfig(k) {
			t.Errorf("IsSyncedTopicConfig(%q) = false", k)
		}
	}
	for _, k := range []string{"message.timestamp.type", "min.insync.replicas", "unclean.leader.election.enable",
		"leader.replication.throttled.replicas", "follower.replication.throttled.replicas", "", "retention"} {
		if IsSyncedTopicConfig(k) {
			t.Errorf("IsSyncedTopicConfig(%q) = true; it must never be carried", k)
		}
	}
}

func TestTopicConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		tc   TopicConfig
		want string // "" = valid
	}{
		{TopicConfig{Topic: "state", Partitions: 3, Configs: map[string]string{"cleanup.policy": "compact,delete"}}, ""},
		{TopicConfig{Topic: "state", Partitions: 1}, ""},
		{TopicConfig{Topic: "", Partitions: 1}, "empty"},
		{TopicConfig{Topic: "st ate", Partitions: 1}, "not in"},
		{TopicConfig{Topic: "state", Partitions: 0}, "partitions"},
		{TopicConfig{Topic: "state", Partitions: 1, Configs: map[string]string{"min.insync.replicas": "2"}}, "not synced"},
		{TopicConfig{Topic: "state", Partitions: 1, Configs: map[string]string{"retention.ms": ""}}, "value"},
		{TopicConfig{Topic: "state", Partitions: 1, Configs: map[string]string{"retention.ms": strings.Repeat("9", MaxTopicConfigValueLen+1)}}, "value"},
	} {
		err := tc.tc.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.tc, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one mentioning %q", tc.tc, err, tc.want)
		}
	}
}

// FuzzTopicConfigReport: whatever a sender puts in a report, decoding and
// validating it never panics, and a report that validates still validates
// after a round trip through JSON with the same content.
func FuzzTopicConfigReport(f *testing.F) {
	f.Add([]byte(`{"topics":[{"topic":"state","partitions":3,"configs":{"cleanup.policy":"compact","retention.ms":"1"}}]}`))
	f.Add([]byte(`{"topics":[{"topic":"..","partitions":-1,"configs":{"min.insync.replicas":""}}]}`))
	f.Add([]byte(`{"topics":null}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rep TopicConfigReport
		if json.Unmarshal(b, &rep) != nil {
			return
		}
		for _, tc := range rep.Topics {
			if tc.Validate() != nil {
				continue
			}
			out, err := json.Marshal(tc)
			if err != nil {
				t.Fatal(err)
			}
			var back TopicConfig
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("re-decode %s: %v", out, err)
			}
			if err := back.Validate(); err != nil {
				t.Fatalf("valid %+v is invalid after a round trip: %v", tc, err)
			}
			if back.Topic != tc.Topic || back.Partitions != tc.Partitions || len(back.Configs) != len(tc.Configs) {
				t.Fatalf("round trip changed %+v into %+v", tc, back)
			}
			for k, v := range tc.Configs {
				if back.Configs[k] != v {
					t.Fatalf("round trip changed %s=%q into %q", k, v, back.Configs[k])
				}
			}
		}
	})
}
