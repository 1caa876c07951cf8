// Package buffer is the agent's durable store: compressed chunks waiting to
// be shipped, the next source offset of every partition, and losses not yet
// reported, in one bbolt file (dir/buffer.db).
//
// # Basics
//
//	            Append (one tx: chunk + meta + next offsets)
//	              │
//	Floor         ▼                                   NextSeq
//	  │  acked  ┌────┬────┬────┬────┬────┬────┬────┐     │
//	  ▼  (gone) │ 17 │ 18 │ 19 │ 20 │ 21 │ 22 │ 23 │ ◄───┘
//	            └────┴────┴────┴────┴────┴────┴────┘
//	            ◄─ leased ─►  ◄──── waiting ────────►
//	            (in flight)
//	            ◄── attempted mark (persisted) ──►   drop-oldest deletes only
//	                                                  above this mark
//
// A chunk, its metadata (sequence number, record count, per-partition offset
// ranges) and the next offsets it advances are written in one transaction, so
// after any crash the stored offsets say exactly which records are in the
// buffer and where reading resumes. Sequence numbers start at 1 and are never
// reused within a buffer; the buffer's random Epoch names that numbering.
//
// Lease hands out the lowest stored chunk not leased yet; Ack deletes it after
// the aggregator acknowledged it, Reject deletes it and records its ranges as
// losses (one transaction), Release gives it back for the next Lease, and
// DropBefore deletes chunks the aggregator reports it already applied (not
// losses). Losses (AdvanceOffsets, Reject, drop-oldest, corrupt frames) wait in
// the file until AckLosses; contiguous losses of one partition and reason are
// merged into one record.
//
// The file never grows past Options.MaxBytes. bbolt's MaxSize is the hard
// stop, and the store admits a chunk only while its own accounting of the
// bytes it stores (page rounding and bbolt headers included) stays within a
// budget below MaxBytes, leaving room for bbolt's meta pages, copy-on-write
// pages, the last growth step and fragmentation (see budget.go). Measured by
// TestFileSizeBoundedUnderChurn with random 64 KiB–1 MiB frames appended and
// acknowledged for 2 s: with MaxBytes 16 MiB the budget is 94.5 % and the file
// peaked at 95.7–98.0 % of MaxBytes; with 4 MiB (MinMaxBytes) the budget is
// 82.7 % and the file peaked at 93.4 %; with 1 GiB the budget is 96.9 %.
// bbolt never refused a commit in those runs.
//
// When a chunk does not fit, PolicyBlock makes Append wait (the agent then
// stops reading; the edge cluster's retention holds the data), logging one
// warning per episode. PolicyDropOldest deletes the oldest chunks that were
// never leased (above the persisted attempted mark), records their exact
// ranges as losses in the same transaction and logs them; if nothing is
// droppable it waits like PolicyBlock. A chunk that was ever leased may have
// reached the aggregator, so it is never reported lost, even after a restart:
// that is what keeps the reported loss ranges equal to what is missing in the
// hub.
//
// # Caveats
//
// Values read from bbolt are valid only inside their transaction; the store
// copies every frame it returns (Chunk.Frame belongs to the caller).
//
// Open takes bbolt's file lock with a timeout (Options.LockTimeout, 1 s by
// default): a second agent on the same directory fails fast with ErrLocked.
// The file records FormatVersion; a file of another version is refused with
// ErrUnsupportedFormat and a message naming both versions, never rewritten.
//
// Crash safety is tested with a real child process appending in a loop and
// killed with SIGKILL at random moments (TestCrashKill9): after every kill
// the store opens, every frame matches its checksum, and the stored offsets
// match the newest stored chunk.
package buffer
