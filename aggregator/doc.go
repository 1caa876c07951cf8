// Package aggregator receives chunks from edge agents over HTTP and writes
// every record exactly once to the hub Kafka cluster.
//
// # Basics
//
//	agent ══HTTP/2══► server ──► edge sequencer ──► dedupe ──► hub writer ──► hub Kafka
//	                  (limits,    (per edge+epoch:   (watermark   (kafka-go Client.Produce,
//	                   identity)   seq order)         per source   acks=all, one batch per
//	                                                  partition)   partition at a time)
//
// A chunk is answered 200 only after the hub acknowledged every record in it
// with acks=all. Chunks of one edge are applied one at a time in sequence
// order; different edges are applied in parallel, so a slow or broken edge
// never stalls the others.
//
// # Deduplication
//
// The identity of a record is (edge, source topic, source partition, source
// offset). For each (edge, topic, partition) the aggregator keeps a watermark,
// the highest source offset known to be in the hub, and drops every record at
// or below it. The watermark is never trusted from local state: the first
// time a partition is touched after start, and after any produce error whose
// outcome is unknown, it is derived from the hub itself by reading the
// provenance headers of the last records of the destination partition. An
// aggregator with an empty --state-dir is therefore still exactly-once.
//
// # Hub topics
//
// A hub topic is created with the source's partition count,
// message.timestamp.type=CreateTime, and the edge topic's settings as the
// agent reports them (POST /v1/topic-configs), with Config.HubTopicConfigs on
// top; later changes are applied with IncrementalAlterConfigs. A setting the
// hub refuses is logged, counted and retried at the agent's next report; it
// never stops records. docs/design.md explains what compaction at the hub
// means for the watermark derivation.
//
// # State
//
// The state directory holds, per edge, the buffer epoch and the next expected
// chunk sequence (so that a reconnecting agent learns which chunks it need not
// send again), and the loss reports received from agents. Losing it costs
// re-sent chunks, never duplicates.
//
// # Caveats
//
// A produce whose outcome is unknown (a timeout, a broken connection) may be
// appended by the hub after the aggregator looked at the partition's tail.
// Before re-deriving a watermark after such an error the aggregator waits
// until the partition's high watermark stops moving for SettleTime.
//
// When the hub permanently refuses a record (for example larger than the
// topic's max.message.bytes) the chunk is answered 422 and the agent reports
// the chunk's ranges as lost, although records of other partitions of that
// chunk may already be in the hub.
package aggregator
