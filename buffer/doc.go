// Package buffer is the agent's durable queue: a single bbolt file that holds
// compressed chunks until the aggregator has applied them, the next source
// offset of every partition, and the losses not yet reported.
//
// # Basics
//
// Open a Store on a directory; the file is dir/buffer.db. One process at a
// time: a second Open fails with ErrLocked after Options.LockTimeout.
//
// The reader appends: Append(ctx, frame, meta, next) stores the frame and
// its ChunkMeta under meta.Seq, which must be NextSeq(), and sets the next
// offsets of the partitions it covers, in ONE transaction. After a crash
// either both are there or neither, so re-reading from Offsets() never
// duplicates or skips a record. AdvanceOffsets moves offsets without a chunk
// (and records losses, such as data the edge cluster's retention deleted
// before it was read) in one transaction too.
//
// The shipper leases: Lease returns the lowest-Seq chunk nobody holds,
// several may be in flight, and each ends with Ack (applied: delete),
// Reject (refused for good: delete and record its ranges as losses, in one
// transaction) or Release (try again later: it is the next one leased).
// DropBefore(n) deletes chunks below n that the aggregator reports as
// applied already; they are not losses.
//
//	         Floor()                   attempted mark
//	            │                             │
//	acked …     ▼                             ▼
//	         ┌────┬────┬────┬────┬────┬────┬────┬────┬────┬────┐
//	         │  7 │  8 │  9 │ 10 │ 11 │ 12 │ 13 │ 14 │ 15 │ 16 │ ◄── Append(NextSeq() = 17)
//	         └────┴────┴────┴────┴────┴────┴────┴────┴────┴────┘
//	            L    L         L     L: leased, in flight (in memory only)
//	         ◄─────────────────────────────────►◄─────────────►
//	           never dropped: at or below the     droppable
//	           mark (leased once, or reserved)
//
//	Lease() returns 9, the lowest chunk not leased. Ack(8) deletes 8. A full
//	store under drop-oldest deletes 14, 15, … and records them as losses.
//
// Seq starts at 1 and never goes back, not even when the store is empty.
// Epoch() is a random id created with the file: a new file means new
// sequence numbers, and the aggregator tells them apart by the epoch.
//
// Losses are kept until AckLosses. PendingLosses returns them; a loss it has
// returned never changes afterwards. A new loss that continues the newest
// unreported loss of the same partition and reason extends it instead of
// adding a record, so a long drop-oldest episode costs one record per
// partition.
//
// # Size
//
// The file on disk never exceeds Options.MaxBytes. bbolt's MaxSize is the
// hard stop: a commit that would grow the file further fails and changes
// nothing, and the store treats that as full. In front of it, the store
// counts what its records occupy (page-rounded frames, small records four
// times over for worst-case page fill; Stats.UsedBytes) and admits a chunk
// only while that stays within Stats.BudgetBytes:
//
//	budget = MaxBytes − 32 pages − AllocSize − 1 page − max(MaxBytes/16, 512 KiB)
//	         [− 2 × free-list pages with Options.SyncFreelist]
//
// AllocSize, bbolt's growth step, is MaxBytes/64 rounded down to a power of
// two, between 64 KiB and 16 MiB. The budget is 82.7% of MaxBytes at the
// 4 MiB minimum, 91.4% at 16 MiB, 92.1% at 256 MiB, 92.2% at 1 GiB and 93.6%
// at 10 GiB.
//
// Measured with TestFileSizeBoundedUnderChurn (both policies, random
// lease/ack/reject/release, 60 s per case with EDGEMIRROR_BUFFER_SOAK=60s):
// the file outgrew the accounted bytes (free runs too short for a segment,
// copy-on-write pages, the growth step) by at most 1.6 MB (0.6% of MaxBytes)
// with 1 MiB frames in 256 MiB, 8.8 MB (3.3%) with mixed frames (1 byte to
// 16 MiB, or the whole budget in stores below 16 MiB) in 256 MiB, and 1 MB
// (5.9%) in 16 MiB with SyncFreelist. The file peaked at 92.5% (256
// MiB, 1 MiB frames, 8,707 appends), 95.4% (256 MiB, mixed), 94.4% (4 MiB)
// and 96.9% (16 MiB, mixed, SyncFreelist) of MaxBytes, and bbolt refused no
// commit the accounting had admitted. With a slack of MaxBytes/64 instead,
// mixed frames at 256 MiB drove the file to 99.3% and 60 of 8,758 commits
// were refused (handled as full, see below), hence MaxBytes/16.
//
// Frames are stored in 64 KiB segments, each alone in a nested bucket (see
// frames.go): a frame is written once and never copied when neighbours
// change, and any hole a deleted segment leaves fits any later segment. With
// whole frames as values, bbolt's leaf pages hold two to four big values and
// rewrite them all on each append, and mixed sizes fragment the file until
// bbolt refuses commits the accounting admitted.
//
// Memory does not grow with the backlog: counters are kept incrementally and
// rebuilt on Open by scanning chunk metadata, offsets and losses, never
// frames. Only the leased set (in flight) is held per chunk.
//
// # Full policies
//
// When a chunk does not fit the budget, or bbolt refuses the commit:
//
//   - PolicyBlock: Append waits until Ack, Reject, DropBefore or AckLosses
//     frees room, ctx ends or Close is called. One warning is logged per
//     episode, and the time is counted in blocked_seconds_total.
//   - PolicyDropOldest: Append deletes the oldest chunks above the attempted
//     mark, just enough to fit, and records each one's ranges as losses with
//     reason wire.LossReasonDropOldest in the same transaction; each dropped chunk is
//     logged at WARN with its exact topic/partition/offset ranges and counted
//     in dropped_chunks_total and dropped_records_total. If the droppable
//     chunks would not free enough, nothing is dropped and Append waits as
//     with PolicyBlock.
//
// A frame that cannot fit even in an empty store (more than MaxFrameBytes,
// or more than the budget minus offsets and pending losses) fails at once
// with ErrTooLarge; split it.
//
// The attempted mark: a chunk that was ever leased may have been applied by
// the aggregator, so reporting it lost would be false. Before Lease hands
// out a chunk above the persisted mark, it persists mark = seq+16 (one
// commit per 16 leases), and drop-oldest only deletes chunks above the
// mark. The mark survives restarts.
//
// # Durability
//
// Every mutating call is one bbolt read-write transaction, committed with
// fsync before the call returns (bbolt writes data pages, syncs, then the
// checksummed meta page, and syncs again; Open picks the newest valid meta
// page). TestCrashKill9 re-executes the test binary as a writer and kills it
// with SIGKILL at random moments, then checks that the store opens, every
// frame is intact, the offset matches the last chunk, and every sequence
// number from Floor to NextSeq is either stored or covered by a loss. Stored
// frames carry a CRC-32C: a frame that no longer matches when leased is
// deleted and reported as a loss with wire.LossReasonBufferCorrupt, never shipped.
//
// # Format versions and upgrades
//
// The file carries a format version (FormatVersion, in the state bucket).
// Open refuses other versions (and bbolt files this package did not write)
// with ErrUnsupportedFormat, naming both versions; a newer version is named
// as written by a newer edgemirror, so a downgraded gateway says what to do.
// A refused file is never written to: Open checks the version before its
// first commit, and opens without persisting the free-page list until then
// (bbolt would otherwise rewrite a file that has none inside Open).
//
// Upgrades keep the buffer: a release reads every format version earlier
// releases wrote. testdata/buffer-formatN.db is a buffer an agent of format
// version N left behind (records read while its aggregator was down), with
// a manifest of what it holds; TestDrainFixtureOfEarlierRelease drains each
// with this build, every record exactly once, and test/packaging ships one
// through the agent to a hub. A change of the format adds a version, keeps
// reading the old ones, and commits a new fixture (test/packaging
// TestWriteBufferFixture -write-buffer-fixture).
//
// # Observability
//
// Metrics (namespace edgemirror, subsystem buffer), registered on
// Options.Registerer and unregistered by Close: chunks, payload_bytes,
// file_bytes, used_bytes, budget_bytes, leased_chunks and pending_losses
// gauges; appended_chunks_total, acked_chunks_total (Ack and DropBefore),
// dropped_chunks_total{reason}, dropped_records_total{reason} (including
// losses given to AdvanceOffsets), blocked_seconds_total,
// full_commits_total (commits bbolt refused), and the
// commit_duration_seconds histogram (write transactions including fsync).
// Reason labels are the loss reasons when they are short lower-case
// words, else "other".
//
// # Caveats
//
//   - The file never shrinks (bbolt does not return space to the file
//     system). Lowering MaxBytes below the current file size leaves the
//     file as it is; the store logs a warning and admits chunks only as the
//     accounting allows. Remove the directory offline to reclaim space.
//   - Free-page list: by default bbolt does not persist its list of free
//     pages (NoFreelistSync, as etcd runs it) and rebuilds it on Open by
//     walking the tree, which reads one page per 64 KiB segment: Open of a
//     store holding 123 MiB took 14 ms warm (1.4 ms with the list
//     persisted). Persisting it (Options.SyncFreelist) writes 8 bytes per
//     free page on every commit, 2 MiB per commit for a drained 1 GiB
//     file; a 1 MiB Append into a half-drained 256 MiB store took 2.1 ms
//     instead of 1.6 ms. Both are crash safe: the committed tree defines
//     which pages are free. A commit bbolt refuses costs a rebuild too.
//   - Up to 16 chunks above the last leased one are protected by the
//     attempted mark although never sent; under drop-oldest they are kept
//     like leased ones.
//   - Leases live in memory. After a restart every stored chunk is leased
//     again from the lowest; the aggregator's dedupe makes that exactly once.
//   - Ack and Reject of a chunk that is not stored return ErrNotFound; after
//     DropBefore that is expected and harmless.
//   - Appends are serialised (one Seq at a time); Lease, Offsets and Stats
//     run concurrently with them.
package buffer
