package wire

import "time"

// The fleet view: heartbeats from agents, the per-edge status the
// aggregators keep in the hub, and the loss events. docs/protocol.md
// sections 3.8 and 3.9 describe the exchange.

// Paths of the fleet view.
const (
	// PathHeartbeat accepts POST with a JSON Heartbeat as the body. It is a
	// request of its own, never queued behind chunks.
	PathHeartbeat = "/v1/heartbeat"
	// PathEdges answers GET with a JSON array of EdgeStatus, one per edge.
	PathEdges = "/v1/edges"
)

// MaxHeartbeatBytes bounds a Heartbeat body; a larger one is answered 413.
const MaxHeartbeatBytes = 64 << 10

// Heartbeat is what an agent reports about itself, at least every
// --heartbeat-interval, whether it is shipping, idle, blocked or refused.
// Zero values are left out to keep it small on metered links; an absent
// field is zero (false for the booleans).
type Heartbeat struct {
	// Version is the agent's build version.
	Version string `json:"version"`
	// Epoch is the agent's buffer epoch.
	Epoch uint64 `json:"epoch"`
	// SentAt is the agent's clock when it sent the heartbeat. The
	// aggregator does not trust it for last_seen (its own clock is used).
	SentAt time.Time `json:"sent_at"`
	// IntervalSeconds is the agent's --heartbeat-interval.
	IntervalSeconds float64 `json:"interval_seconds"`

	// Backlog: what the buffer holds that the aggregator has not
	// acknowledged.
	BacklogChunks  int64 `json:"backlog_chunks,omitempty"`
	BacklogRecords int64 `json:"backlog_records,omitempty"`
	BacklogBytes   int64 `json:"backlog_bytes,omitempty"`
	// RPOSeconds is the age of the oldest buffered record not yet
	// acknowledged, by its Kafka timestamp; 0 when nothing is pending.
	RPOSeconds float64 `json:"rpo_seconds,omitempty"`
	// EdgeLagRecords is the number of offsets in the edge cluster the agent
	// has not read yet (last stable offset minus next offset, summed).
	EdgeLagRecords int64 `json:"edge_lag_records,omitempty"`
	// BufferFillRatio is the used part of the buffer's budget, 0 to 1.
	BufferFillRatio float64 `json:"buffer_fill_ratio,omitempty"`
	// LostRecords counts records lost by an explicit policy since the agent
	// started, by reason. The durable count is in the loss events.
	LostRecords map[string]int64 `json:"lost_records,omitempty"`
	// PendingLossRanges is the number of loss ranges not yet reported.
	PendingLossRanges int `json:"pending_loss_ranges,omitempty"`
	// RecordsPerSecond is the rate of records acknowledged by the
	// aggregator since the previous heartbeat.
	RecordsPerSecond float64 `json:"records_per_second,omitempty"`
	// ReadPerSecond is the rate of records read from the edge since the
	// previous heartbeat.
	ReadPerSecond float64 `json:"read_per_second,omitempty"`

	// LinkUp is false while the agent cannot reach the aggregator with
	// chunks (the heartbeat itself got through).
	LinkUp bool `json:"link_up,omitempty"`
	// Blocked is true while the reader waits for room in a full buffer
	// (--buffer-full=block).
	Blocked bool `json:"blocked,omitempty"`
	// Refused is the last answer by which the aggregator refused chunks
	// (401, 403, 409) when no chunk was acknowledged since; empty otherwise.
	Refused string `json:"refused,omitempty"`
}

// Edge states of EdgeStatus.State.
const (
	// EdgeOK: heard from recently and not behind.
	EdgeOK = "ok"
	// EdgeBehind: heard from recently, but its RPO is above the
	// aggregator's --behind-after, or it reports being blocked or refused.
	EdgeBehind = "behind"
	// EdgeDisconnected: not heard from for longer than --disconnect-after.
	EdgeDisconnected = "disconnected"
	// EdgeNeverSeen: configured, but never heard from.
	EdgeNeverSeen = "never-seen"
)

// EdgeStatus is one row of GET /v1/edges and of `edgemirror status --json`.
type EdgeStatus struct {
	Edge  string `json:"edge"`
	State string `json:"state"`
	// LastSeen is when an aggregator last received a heartbeat or a chunk
	// of the edge (RFC 3339); null for a never-seen edge.
	LastSeen *time.Time `json:"last_seen"`
	// SecondsSinceSeen is the time since LastSeen when the answer was made.
	SecondsSinceSeen float64 `json:"seconds_since_seen"`
	BacklogChunks    int64   `json:"backlog_chunks"`
	BacklogRecords   int64   `json:"backlog_records"`
	BacklogBytes     int64   `json:"backlog_bytes"`
	// RPOSeconds is the edge's reported RPO; for a disconnected edge the
	// time since it was last heard from is added, so it keeps growing (a
	// lower bound of what would be lost if the site were gone now).
	RPOSeconds       float64 `json:"rpo_seconds"`
	EdgeLagRecords   int64   `json:"edge_lag_records"`
	BufferFillRatio  float64 `json:"buffer_fill_ratio"`
	LostRecords      int64   `json:"lost_records"` // from the loss events in the hub
	LossRanges       int     `json:"loss_ranges"`  // from the loss events in the hub
	RecordsPerSecond float64 `json:"records_per_second"`
	Version          string  `json:"version"`
	LinkUp           bool    `json:"link_up"`
	Blocked          bool    `json:"blocked"`
	Refused          string  `json:"refused,omitempty"`
	// Aggregator is the aggregator that received the last heartbeat.
	Aggregator string `json:"aggregator,omitempty"`
}

// LossEvent is one record of the hub's events topic, keyed by edge, and
// one row of GET /v1/losses. ID is derived from the range's identity, so
// the same range reported twice has the same ID and is written once.
type LossEvent struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"` // "loss"
	Edge        string    `json:"edge"`
	Topic       string    `json:"topic"`
	Partition   int32     `json:"partition"`
	FirstOffset int64     `json:"first_offset"`
	LastOffset  int64     `json:"last_offset"`
	Records     int64     `json:"records"`
	Reason      string    `json:"reason"`
	Time        time.Time `json:"time"`                 // when the aggregator wrote the event
	Aggregator  string    `json:"aggregator,omitempty"` // who wrote it
}
