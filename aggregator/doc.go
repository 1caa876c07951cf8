// Package aggregator receives chunks from edge agents over HTTP and writes
// every record exactly once to the hub Kafka cluster.
//
// # Basics
//
//	agent ══HTTP/2══► server ──► edge sequencer ──► edge writer ──► hub Kafka
//	                  (limits,    (per edge+epoch:   (dedupe by        (one transaction per
//	                   identity)   seq order, group   watermark, txn    group of chunks, under
//	                               commit)            producer)         the edge's transactional id)
//
// A chunk is answered 200 only after the hub transaction that holds its
// records committed. Chunks of one edge are applied in sequence order, every
// ready chunk of the edge in one transaction; different edges are applied in
// parallel, so a slow or broken edge never stalls the others.
//
// # Fencing and deduplication
//
// The identity of a record is (edge, source topic, source partition, source
// offset). Hub writes of an edge go through Kafka transactions under one
// transactional id per edge (package txn). Taking the id (InitProducerId)
// fences every other aggregator writing for the edge and aborts its open
// transaction. Under that claim the watermark of each (edge, topic,
// partition) — the highest source offset the hub committed — is derived from
// the provenance headers of the committed tail of the destination partition,
// and every record at or below it is dropped. Nothing in a process's memory
// outlives its claim: a fenced aggregator's writes are refused by the hub,
// and it derives everything again when it next takes the edge. Any number
// of aggregators may serve an edge, and an empty --state-dir is still
// exactly-once.
//
// An ambiguous write is resolved by the protocol: the identical batch again
// (the leader dedupes it by sequence number), or the transaction abandoned
// and aborted by the next claim. Nothing waits for the hub to look quiet.
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
// When the hub permanently refuses a record (for example larger than the
// topic's max.message.bytes) the chunk is answered 422 and the agent reports
// the chunk's ranges as lost; its transaction is aborted, so none of its
// records is in the hub. Other chunks of the same transaction are answered
// 503 and retried.
package aggregator
