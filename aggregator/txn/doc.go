// Package txn is a small Kafka transactional producer for one transactional
// id, built on kafka-go's low-level Client, which has every call of the
// protocol but no transactional producer of its own.
//
// # Contract
//
//   - Claim (InitProducerId) makes this process the owner of the
//     transactional id. Every earlier owner is fenced: its open transaction
//     is aborted by the coordinator before Claim returns, and each of its
//     later requests is refused by the brokers. Claim also starts a new
//     producer epoch, so per-partition sequence numbers restart at 0.
//   - Add (AddPartitionsToTxn) enters partitions into the current
//     transaction; Produce may only write to partitions added before.
//   - Produce writes one record batch, with this producer's id, epoch and
//     the partition's next sequence number, and returns its base offset. A
//     produce whose outcome is unclear (a timeout, a lost connection, a
//     leader change) is sent again with the identical bytes: the partition
//     leader recognises the sequence number and appends it at most once.
//     ProduceBatches does the same for one batch each of several
//     partitions, in one produce request per partition leader; a batch
//     whose partition answered is not sent again, and its error names the
//     batch that failed.
//   - CommitOffsets (AddOffsetsToTxn the first time in a transaction, then
//     TxnOffsetCommit) commits a consumer group's offsets in the current
//     transaction: they take effect exactly when it commits.
//   - Commit (EndTxn) makes everything produced since the last Commit
//     visible to read_committed readers, atomically. A Commit that returns
//     nil has committed.
//   - Any error other than from Claim leaves the transaction unusable: the
//     caller must Claim again, which aborts what was written since the last
//     Commit and fences whoever else may hold the id. Nothing written in an
//     aborted transaction is ever visible to a read_committed reader, so
//     there is never a "maybe" to resolve by waiting.
//
// Errors are *Error values of one Kind: Fenced (another owner took the
// transactional id), Refused (the hub will never accept these records;
// RecordErrors names them where the broker did), or Unavailable (anything
// else: retry after a new Claim).
//
// A Producer is safe for concurrent use by Produce and ProduceBatches
// calls on different partitions and CommitOffsets; Claim, Add and Commit must not run
// concurrently with anything else.
//
// kafka-go's Client looks the coordinator up (FindCoordinator) before every
// transactional or group request. AddPartitionsToTxn, AddOffsetsToTxn and
// EndTxn are sent here to the transaction coordinator found once instead,
// and TxnOffsetCommit to the group coordinator found once; each is looked
// up again after an answer or a failure that says it moved (NOT_COORDINATOR,
// COORDINATOR_NOT_AVAILABLE, no answer at all).
//
// The batches are encoded here (record batch v2) rather than with kafka-go's
// RecordSet, whose writer hard-codes producer id, epoch and sequence to -1.
// kafka-go speaks the classic transaction protocol (EndTxn below v5,
// Produce below v12), which Kafka 3.x and 4.x both serve.
package txn
