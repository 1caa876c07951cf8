package buffer

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FormatVersion is the on-disk format this build reads and writes.
const FormatVersion = 1

// PartitionKey names a source partition.
type PartitionKey struct {
	Topic     string
	Partition int32
}

// Range is a run of source offsets of one partition, both ends inclusive.
// Records may be smaller than Last-First+1 (compacted topics, transaction
// markers).
type Range struct {
	Topic       string
	Partition   int32
	First, Last int64
	Records     int64
}

// ChunkMeta describes a chunk. Seq is its per-buffer sequence number.
type ChunkMeta struct {
	Seq      uint64
	Records  int
	RawBytes int
	Ranges   []Range
}

// Chunk is a leased chunk. Frame and Meta are copies owned by the caller.
type Chunk struct {
	Seq   uint64
	Frame []byte
	Meta  ChunkMeta
}

// Loss is a range of source records that will never reach the hub. ID is
// assigned by the store.
type Loss struct {
	ID     uint64
	Range  Range
	Reason string
	At     time.Time
}

// Stats is a snapshot of the store, maintained incrementally.
type Stats struct {
	Chunks       int
	PayloadBytes int64 // sum of frame lengths
	FileBytes    int64 // size of the bbolt file
	Leased       int
	Records      int64 // sum of ChunkMeta.Records over stored chunks

	UsedBytes     int64  // accounted bytes of all records, compared against BudgetBytes
	BudgetBytes   int64  // MaxBytes minus the reserve bbolt needs
	PendingLosses int    // loss records not yet acknowledged
	AttemptedMark uint64 // chunks with Seq <= this are never dropped by drop-oldest
}

// Bucket and key names. Every top-level bucket of the file is listed here.
var (
	bucketState     = []byte("state")
	bucketFrames    = []byte("frames")    // seq+segment index -> nested bucket {frameKey: segment}, see frames.go
	bucketChunkMeta = []byte("chunkmeta") // seq -> encodeStored
	bucketOffsets   = []byte("offsets")   // partitionKeyBytes -> next offset (uint64 BE)
	bucketLosses    = []byte("losses")    // loss id -> encodeLoss

	keyFormat     = []byte("format")
	keyEpoch      = []byte("epoch")
	keyNextSeq    = []byte("next_seq")
	keyAttempted  = []byte("attempted")
	keyNextLossID = []byte("next_loss_id")

	frameKey = []byte("f")

	allBuckets = [][]byte{bucketState, bucketFrames, bucketChunkMeta, bucketOffsets, bucketLosses}
)

// attemptBlock is how far ahead of a leased seq the attempted mark is
// persisted, so that Lease writes the mark once per attemptBlock chunks.
const attemptBlock = 16

// Log attribute keys.
const (
	logKeySystem = "system"
	logKeyPath   = "path"
	logKeySeq    = "seq"
	logKeyReason = "reason"
	logKeyRanges = "ranges"
	logKeyError  = "error"
)

// lossKey identifies loss records that may be merged.
type lossKey struct {
	topic     string
	partition int32
	reason    string
}

// Store is a durable FIFO of chunks with per-partition offsets, kept in one
// bbolt file. See the package documentation for the contract. All methods
// are safe for concurrent use.
type Store struct {
	path  string
	db    *bolt.DB
	opts  Options
	log   *slog.Logger
	m     *metrics
	lay   layout
	epoch atomic.Uint64 // changes only by RenewEpoch

	amu sync.Mutex   // serialises Append, so seq check and commit are one step
	wmu sync.Mutex   // held around every write transaction and the state change after it
	rmu sync.RWMutex // readers hold R; a retry after ErrMaxSizeReached holds W so pending pages are released

	waiting atomic.Int32 // Append calls currently waiting for room

	// Guarded by mu. Writers change these only while also holding wmu, so
	// code holding wmu may read them without mu.
	mu         sync.Mutex
	closed     bool
	closedCh   chan struct{}
	spaceCh    chan struct{} // closed and replaced when room is freed
	dataCh     chan struct{} // closed and replaced when a chunk becomes leasable
	nextSeq    uint64
	floor      uint64
	chunks     int
	payload    int64
	records    int64
	used       int64 // accounted bytes of everything stored
	chunkUsed  int64 // the part of used that chunks take
	fileBytes  int64
	leased     map[uint64]struct{}
	attempted  uint64
	offsetKeys map[PartitionKey]struct{}

	// Guarded by wmu.
	nextLossID    uint64
	losses        int
	lossHandedOut uint64              // highest loss id returned by PendingLosses in this process
	lossTail      map[lossKey]lossRef // newest unreported loss per key, for merging
}

type lossRef struct {
	id  uint64
	rng Range
	enc int // encoded length
}

// Open opens or creates the buffer in dir (created if needed) as
// dir/buffer.db. Another Store holding the file makes Open fail with
// ErrLocked after Options.LockTimeout; a file with a format this build does
// not know fails with ErrUnsupportedFormat and is left untouched.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	if opts.MaxBytes > math.MaxInt {
		return nil, fmt.Errorf("open buffer: MaxBytes %d too large for this platform: %w", opts.MaxBytes, ErrInvalid)
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create buffer directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// Open without persisting the free-page list whatever SyncFreelist
	// says: bbolt would otherwise rewrite a file without one in Open,
	// before load has checked that the file is ours and of our format. A
	// file is never written to before that check; SyncFreelist applies
	// from the first commit after it.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		MaxSize:        int(opts.MaxBytes),
		PageSize:       pageSize,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open buffer %s: no lock within %v: %w", path, opts.LockTimeout, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	if ps := db.Info().PageSize; ps != pageSize {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer %s: found page size %d, this build supports %d: %w", path, ps, pageSize, ErrUnsupportedFormat)
	}
	lay, err := newLayout(opts.MaxBytes, pageSize, opts.SyncFreelist)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	// bbolt grows the file in AllocSize steps once it is larger than that;
	// a smaller step wastes less of MaxBytes (see budget.go).
	db.AllocSize = lay.allocSize

	s := &Store{
		path:       path,
		db:         db,
		opts:       opts,
		log:        opts.Logger.With(slog.String(logKeySystem, "buffer"), slog.String(logKeyPath, path)),
		m:          newMetrics(),
		lay:        lay,
		closedCh:   make(chan struct{}),
		spaceCh:    make(chan struct{}),
		dataCh:     make(chan struct{}),
		leased:     make(map[uint64]struct{}),
		offsetKeys: make(map[PartitionKey]struct{}),
		lossTail:   make(map[lossKey]lossRef),
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	db.NoFreelistSync = !opts.SyncFreelist
	if err := s.m.register(opts.Registerer); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	s.statFile()
	s.m.budgetBytes.Set(float64(lay.budget))
	s.publish()
	if s.fileBytes > opts.MaxBytes {
		s.log.Warn("buffer file is larger than MaxBytes; bbolt files never shrink, so it stays this size until the buffer is removed offline",
			slog.Int64("file_bytes", s.fileBytes), slog.Int64("max_bytes", opts.MaxBytes))
	}
	if s.used > lay.budget {
		s.log.Warn("buffer holds more than its budget (MaxBytes was lowered?); appends wait or drop until it drains",
			slog.Int64("used_bytes", s.used), slog.Int64("budget_bytes", lay.budget))
	}
	s.log.Info("buffer opened", slog.Uint64("epoch", s.Epoch()), slog.Int("chunks", s.chunks),
		slog.Uint64("floor", s.floor), slog.Uint64("next_seq", s.nextSeq),
		slog.Int64("budget_bytes", lay.budget), slog.Int("max_frame_bytes", lay.maxFrame))
	return s, nil
}

// load checks the format (creating it in an empty file) and rebuilds the
// in-memory state by scanning the small records only: chunk metadata,
// offsets and losses. Frames are not read.
func (s *Store) load() error {
	fresh := false
	err := s.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketState)
		if st == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("found a bbolt file without an edgemirror format version (this build supports version %d): %w",
					FormatVersion, ErrUnsupportedFormat)
			}
			fresh = true
			return nil
		}
		v, ok := decodeUint64(st.Get(keyFormat))
		if !ok {
			return fmt.Errorf("found no readable format version (this build supports version %d): %w", FormatVersion, ErrUnsupportedFormat)
		}
		if v > FormatVersion {
			return fmt.Errorf("found format version %d, written by a newer edgemirror; this build supports version %d "+
				"(install the newer release again to ship what the buffer holds; the file was not changed): %w",
				v, FormatVersion, ErrUnsupportedFormat)
		}
		if v != FormatVersion {
			return fmt.Errorf("found format version %d, this build supports version %d: %w", v, FormatVersion, ErrUnsupportedFormat)
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("bucket %q missing: %w", name, ErrCorrupt)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fresh {
		var b [8]byte
		for binary.BigEndian.Uint64(b[:]) == 0 {
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("generate epoch: %w", err)
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, name := range allBuckets {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			st := tx.Bucket(bucketState)
			for _, kv := range []struct {
				k []byte
				v uint64
			}{{keyFormat, FormatVersion}, {keyEpoch, binary.BigEndian.Uint64(b[:])}, {keyNextSeq, 1}, {keyAttempted, 0}, {keyNextLossID, 1}} {
				if err := st.Put(kv.k, encodeUint64(kv.v)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("initialize buffer: %w", err)
		}
	}
	return s.db.View(s.scan)
}

func (s *Store) scan(tx *bolt.Tx) error {
	st := tx.Bucket(bucketState)
	var ok [4]bool
	epoch, ok0 := decodeUint64(st.Get(keyEpoch))
	s.epoch.Store(epoch)
	ok[0] = ok0
	s.nextSeq, ok[1] = decodeUint64(st.Get(keyNextSeq))
	s.attempted, ok[2] = decodeUint64(st.Get(keyAttempted))
	s.nextLossID, ok[3] = decodeUint64(st.Get(keyNextLossID))
	if !ok[0] || !ok[1] || !ok[2] || !ok[3] || epoch == 0 || s.nextSeq == 0 || s.nextLossID == 0 {
		return fmt.Errorf("read buffer state: %w", ErrCorrupt)
	}
	s.used = 4 * s.lay.smallCost(16, 8)

	// Chunk metadata and frame segments must list the same chunks: both
	// are written and deleted in the same transactions.
	cm := tx.Bucket(bucketChunkMeta).Cursor()
	fc := tx.Bucket(bucketFrames).Cursor()
	fk, fv := fc.First()
	s.floor = 0
	var last uint64
	for k, v := cm.First(); k != nil; k, v = cm.Next() {
		seq, okk := keySeq(k)
		if !okk {
			return fmt.Errorf("read chunk key %x: %w", k, ErrCorrupt)
		}
		rec, err := decodeStored(seq, v)
		if err != nil {
			return err
		}
		if fk, fv, err = checkSegments(fc, fk, fv, seq, rec.frameLen); err != nil {
			return err
		}
		if s.floor == 0 {
			s.floor = seq
		}
		last = seq
		s.chunks++
		s.payload += int64(rec.frameLen)
		s.records += int64(rec.meta.Records)
		s.chunkUsed += s.lay.chunkCost(rec.frameLen, len(v))
	}
	if fk != nil {
		return fmt.Errorf("frame segment %x has no chunk metadata: %w", fk, ErrCorrupt)
	}
	s.used += s.chunkUsed
	if s.chunks > 0 && last >= s.nextSeq {
		s.log.Warn("stored next sequence number is behind the stored chunks; continuing after the last chunk",
			slog.Uint64("next_seq", s.nextSeq), slog.Uint64("last_seq", last))
		s.nextSeq = last + 1
	}
	if s.chunks == 0 {
		s.floor = s.nextSeq
	}

	err := tx.Bucket(bucketOffsets).ForEach(func(k, v []byte) error {
		pk, err := decodePartitionKey(k)
		if err != nil {
			return err
		}
		if _, ok := decodeUint64(v); !ok {
			return fmt.Errorf("read offset of %s/%d: %w", pk.Topic, pk.Partition, ErrCorrupt)
		}
		s.offsetKeys[pk] = struct{}{}
		s.used += s.lay.smallCost(len(k), len(v))
		return nil
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketLosses).ForEach(func(k, v []byte) error {
		id, okk := keySeq(k)
		if !okk {
			return fmt.Errorf("read loss key %x: %w", k, ErrCorrupt)
		}
		if _, err := decodeLoss(id, v); err != nil {
			return err
		}
		s.losses++
		s.used += s.lay.smallCost(len(k), len(v))
		if id >= s.nextLossID {
			s.nextLossID = id + 1
		}
		// Losses from an earlier run are never extended: that run may have
		// reported them already.
		return nil
	})
}

// Epoch identifies this buffer: a random non-zero id created with the file.
// A new file (the old one deleted) has a new epoch and restarts Seq at 1.
// RenewEpoch gives the same file a new one.
func (s *Store) Epoch() uint64 { return s.epoch.Load() }

// NextSeq is the Seq the next Append must use. It starts at 1 and never
// goes back, not even when the store is empty.
func (s *Store) NextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq
}

// Floor is the lowest stored Seq, or NextSeq() when the store is empty.
func (s *Store) Floor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.floor
}

// MaxFrameBytes is the largest frame Append accepts: about a quarter of
// Stats.BudgetBytes. A chunk whose ChunkMeta encodes to more than 4 KiB
// (hundreds of ranges) may be refused a little below it. The agent should
// cut chunks well below it.
func (s *Store) MaxFrameBytes() int { return s.lay.maxFrame }

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Chunks:        s.chunks,
		PayloadBytes:  s.payload,
		FileBytes:     s.fileBytes,
		Leased:        len(s.leased),
		Records:       s.records,
		UsedBytes:     s.used,
		BudgetBytes:   s.lay.budget,
		PendingLosses: s.losses,
		AttemptedMark: s.attempted,
	}
}

// Close closes the file. Append and Lease calls that are waiting return
// ErrClosed; later calls return ErrClosed. Leases end without being
// released: the next Open hands those chunks out again. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closedCh)
	s.mu.Unlock()

	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Close()
	s.m.unregister()
	if err != nil {
		return fmt.Errorf("close buffer: %w", err)
	}
	return nil
}

// update runs fn in a write transaction and times the commit. The caller
// holds wmu.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	start := time.Now()
	err := s.db.Update(fn)
	s.m.commitDuration.Observe(time.Since(start).Seconds())
	if isFull(err) {
		s.m.fullCommits.Inc()
	}
	return err
}

// view runs fn in a read transaction.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// statFile refreshes the file size after a commit.
func (s *Store) statFile() {
	fi, err := os.Stat(s.path)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.fileBytes = fi.Size()
	s.mu.Unlock()
	s.m.fileBytes.Set(float64(fi.Size()))
}

// publish copies the counters into the gauges.
func (s *Store) publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.chunks.Set(float64(s.chunks))
	s.m.payloadBytes.Set(float64(s.payload))
	s.m.usedBytes.Set(float64(s.used))
	s.m.leased.Set(float64(len(s.leased)))
	s.m.pendingLosses.Set(float64(s.losses))
}

// wakeSpaceLocked wakes Appends waiting for room. The caller holds mu.
func (s *Store) wakeSpaceLocked() {
	close(s.spaceCh)
	s.spaceCh = make(chan struct{})
}

// wakeDataLocked wakes Leases waiting for a chunk. The caller holds mu.
func (s *Store) wakeDataLocked() {
	close(s.dataCh)
	s.dataCh = make(chan struct{})
}

// isClosed reports whether Close was called.
func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
