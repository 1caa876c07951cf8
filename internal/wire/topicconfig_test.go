package wire

import (
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
