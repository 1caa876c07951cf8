// Package agent reads records from an edge Kafka cluster, stores them in the
// durable buffer as compressed chunks and ships the chunks to an aggregator.
//
// # Basics
//
// An Agent is built from a Config with New and driven by Run. Run owns every
// goroutine it starts and returns when its context is cancelled (or on a fatal
// error), after the reader has stopped and before the buffer is closed.
//
//	edge Kafka ──fetch──► reader ──batch──► chunk writer ──chunk──► buffer (bbolt) ──lease──► shipper ══HTTP/2══► aggregator
//	             (raw Fetch, read_committed,    (zstd; one at a      one tx: chunk +         N workers, backoff,
//	              client-side abort filter)      time, in order)     next offsets            token bucket on the conn
//
// Partitions are assigned by the agent itself: every topic that matches
// Config.Topics (and not Config.ExcludeTopics, and not starting with "_") is
// read in full. New topics and new partitions are picked up at the next
// metadata refresh (Config.MetadataInterval).
//
// Where to resume is the next offset stored in the buffer, written in the same
// bbolt transaction as the chunk holding the records before it. The edge
// cluster's consumer-group offsets are never read or written.
//
// # Topic settings
//
// With Config.SyncTopicConfigs (the default) the agent also reads the
// settings of every mirrored topic that are overrides of the topic itself
// (wire.SyncedTopicConfigs: cleanup policy, retention, compaction settings,
// ...; never broker defaults), when it starts mirroring the topic and every
// MetadataInterval, and reports those the aggregator has not taken yet in a
// small request of its own (docs/protocol.md 3.7). Reading never waits for
// it; shipping waits at start for the first report, at most a few seconds,
// so that the hub topics a buffered backlog creates get the edge's settings
// from the start.
//
// # Reading committed records only
//
// kafka-go's IsolationLevel does not filter aborted transactions (kafka-go
// issue #1332), and its Reader turns empty values into nulls. The agent
// therefore sends raw Fetch requests (one per leader broker, read_committed)
// through kafka-go's Transport and filters aborted records itself with the
// AbortedTransactions list of the response, the same algorithm as the Java
// consumer. Control records advance the offset but are never shipped.
//
// # Losses
//
// A record is lost only by an explicit policy, and every loss is logged with
// its exact range, counted in edgemirror_agent_records_lost_total{reason}
// and reported to the aggregator (reasons: internal/wire's LossReason
// constants): the edge cluster's retention deleted offsets the agent had
// not read yet, the buffer was full with the drop-oldest policy, the
// aggregator rejected a chunk permanently, or the agent refused a record
// (below).
//
// # Caveats
//
// Records that already carry edgemirror provenance headers are never shipped
// (they were mirrored from elsewhere; shipping them again could build a
// cycle); they are reported as lost with reason "provenance". Records whose
// timestamp lies outside the years 1678 to 2262 are never shipped either:
// kafka-go encodes timestamps through time.Time.UnixNano, which wraps
// outside that range, and a wrapped timestamp is a silent corruption. They
// are reported as lost with reason "timestamp-out-of-range" (usually a
// producer that sends microseconds as milliseconds).
package agent
