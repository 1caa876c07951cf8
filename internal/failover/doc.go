// Package failover moves consumer groups from an edge cluster to the hub,
// exactly, with kafka-go.
//
// # Basics
//
// Every hub record carries its origin in provenance headers (edge, source
// topic, source partition, source offset), and the hub partition of a source
// partition holds its records in source-offset order, each at most once.
// So the source offsets along a hub partition only grow, and Translate finds
// the hub offset of a source offset by binary search over the hub
// partition: the hub offset of the first record of the source whose source
// offset is at or after the one asked for. That is exact whatever the edge
// did between: aborted transactions, control records, compaction gaps and
// lost ranges all leave offsets without a hub record, and a consumer that
// continues at the translated offset gets exactly the records it had not
// consumed at the edge and the hub has.
//
// When the hub holds no record of the source at or after the offset (the
// agent has not shipped it yet, or nothing came after), the translation is
// the hub partition's end: a consumer continuing there never skips a record
// that arrives later, so a translation never points past a record the hub
// does not have yet.
//
// Everything here reads the hub read_committed, through package committed.
//
// Groups: GroupOffsets reads a group's committed offsets, GroupState says
// whether a group has active members, Commit commits offsets for a group
// without joining it (generation -1, as Kafka's own kafka-consumer-groups
// does), which the broker refuses while the group has members.
//
// Checkpoints: a Checkpoint is the latest translation of one (edge, group,
// source partition), kept in a compacted hub topic, so that a group can be
// moved after the edge is gone.
//
// # Caveats
//
// A hub topic written by anything other than edgemirror, or shared by
// several edges through a topic template without {edge}, still translates
// exactly (records of other origins are skipped), only more slowly.
//
// The counts of records not yet mirrored and lost are bounded reads: above
// CountLimit records a count is an upper bound in offsets, marked as such.
package failover
