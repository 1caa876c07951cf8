package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// isFull reports whether a commit failed because the file may not grow:
// bbolt's MaxSize, or a full disk.
func isFull(err error) bool {
	return errors.Is(err, berrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC)
}

// Append stores frame and meta under meta.Seq, which must be NextSeq(), and
// sets the next offsets in next, all in one transaction. Frame is copied.
//
// When the chunk does not fit, PolicyBlock waits until Ack, Reject or
// DropBefore frees room (or ctx ends, or Close), logging one warning per
// episode. PolicyDropOldest deletes the oldest chunks above the attempted
// mark, recording their ranges as losses in the same transaction, if that
// makes the chunk fit; otherwise it waits like PolicyBlock.
//
// Append returns ErrSeq for a wrong Seq, ErrTooLarge for a frame that can
// never be stored, ErrInvalid for bad ranges or partition keys, ErrClosed
// after Close, and ctx.Err() if ctx ends first. On any error nothing was
// stored and no offset moved.
func (s *Store) Append(ctx context.Context, frame []byte, meta ChunkMeta, next map[PartitionKey]int64) error {
	if err := checkAppend(meta, next); err != nil {
		return fmt.Errorf("append chunk %d: %w", meta.Seq, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append chunk %d: %w", meta.Seq, err)
	}
	meta.Ranges = append([]Range(nil), meta.Ranges...)
	enc := encodeStored(stored{meta: meta, frameLen: len(frame), crc: frameChecksum(frame)})
	cost := s.lay.chunkCost(len(frame), len(enc))
	if len(frame) > s.lay.maxFrame || cost > s.lay.maxChunk {
		return fmt.Errorf("append chunk %d: frame of %d bytes exceeds the limit of %d bytes for a %d-byte buffer: %w",
			meta.Seq, len(frame), s.lay.maxFrame, s.opts.MaxBytes, ErrTooLarge)
	}

	s.amu.Lock()
	defer s.amu.Unlock()

	var blockedAt time.Time
	defer func() {
		if !blockedAt.IsZero() {
			d := time.Since(blockedAt)
			s.m.blockedSeconds.Add(d.Seconds())
			s.log.Info("buffer has room again; reading resumes", slog.Duration("blocked", d))
		}
	}()
	for {
		wait, err := s.tryAppend(frame, meta, enc, cost, next)
		if err != nil || wait == nil {
			return err
		}
		if wait == closedChan {
			continue
		}
		if blockedAt.IsZero() {
			blockedAt = time.Now()
			st := s.Stats()
			s.log.Warn("buffer full: reading stops until the aggregator acknowledges chunks",
				slog.String("policy", s.opts.Policy.String()), slog.Uint64(logKeySeq, meta.Seq),
				slog.Int("chunks", st.Chunks), slog.Int("leased", st.Leased),
				slog.Int64("used_bytes", st.UsedBytes), slog.Int64("budget_bytes", st.BudgetBytes),
				slog.Int64("file_bytes", st.FileBytes), slog.Uint64("attempted_mark", st.AttemptedMark))
		}
		s.waiting.Add(1)
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.closedCh:
			err = ErrClosed
		case <-wait:
		}
		s.waiting.Add(-1)
		if err != nil {
			return fmt.Errorf("append chunk %d: %w", meta.Seq, err)
		}
	}
}

// tryAppend makes one attempt. It returns a channel to wait on when there is
// no room yet, or the final result.
func (s *Store) tryAppend(frame []byte, meta ChunkMeta, enc []byte, cost int64, next map[PartitionKey]int64) (<-chan struct{}, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	closed, nextSeq, used, chunkUsed := s.closed, s.nextSeq, s.used, s.chunkUsed
	s.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("append chunk %d: %w", meta.Seq, ErrClosed)
	}
	if meta.Seq != nextSeq {
		return nil, fmt.Errorf("append chunk %d: next sequence number is %d: %w", meta.Seq, nextSeq, ErrSeq)
	}
	var newKeys int64
	for k := range next {
		if _, ok := s.offsetKeys[k]; !ok {
			newKeys += s.lay.smallCost(len(k.Topic)+5, 8)
		}
	}
	// Room the chunk would have in an empty store: the budget minus
	// offsets, pending losses and state. Waiting cannot help beyond that.
	if empty := s.lay.budget - (used - chunkUsed) - newKeys; cost > empty {
		return nil, fmt.Errorf("append chunk %d: frame of %d bytes needs %d bytes, an empty buffer has %d: %w",
			meta.Seq, len(frame), cost, empty, ErrTooLarge)
	}
	need := used + cost + newKeys - s.lay.budget
	if need > 0 && s.opts.Policy == PolicyDropOldest {
		n, err := s.dropOldest(need, false)
		if err != nil {
			return nil, fmt.Errorf("append chunk %d: %w", meta.Seq, err)
		}
		if n > 0 {
			need = 0
		}
	}
	if need <= 0 {
		done, err := s.commitAppend(frame, meta, enc, next)
		if isFull(err) {
			// Pages freed by earlier commits are reusable only once no
			// older read transaction is open. Retry with readers held off.
			// (The state update runs after rmu is released: Lease holds mu
			// while it waits for rmu.)
			s.rmu.Lock()
			done, err = s.commitAppend(frame, meta, enc, next)
			s.rmu.Unlock()
		}
		if err == nil {
			done(cost)
			return nil, nil
		}
		if !isFull(err) {
			return nil, fmt.Errorf("append chunk %d: %w", meta.Seq, err)
		}
		if errors.Is(err, syscall.ENOSPC) {
			// The file system is full, not the buffer: nothing the
			// policy may drop helps for sure. Keep the chunk's records
			// unread and try again.
			s.log.Error("disk full: cannot write to the buffer; retrying",
				slog.Uint64(logKeySeq, meta.Seq), slog.Duration("retry_in", diskFullRetry), slog.Any(logKeyError, err))
			retry := make(chan struct{})
			time.AfterFunc(diskFullRetry, func() { close(retry) })
			return retry, nil
		}
		// Accounted room, yet bbolt found no run of free pages long enough.
		s.mu.Lock()
		chunks := s.chunks
		s.mu.Unlock()
		s.log.Warn("buffer file has no contiguous room for the chunk although the accounting admits it",
			slog.Uint64(logKeySeq, meta.Seq), slog.Int("frame_bytes", len(frame)), slog.Int("chunks", chunks),
			slog.Any(logKeyError, err))
		if chunks == 0 {
			return nil, fmt.Errorf("append chunk %d: no contiguous room for %d bytes in an empty buffer: %w",
				meta.Seq, len(frame), ErrTooLarge)
		}
		if s.opts.Policy == PolicyDropOldest {
			n, err := s.dropOldest(cost, true)
			if err != nil {
				return nil, fmt.Errorf("append chunk %d: %w", meta.Seq, err)
			}
			if n > 0 {
				return closedChan, nil // try again at once
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spaceCh, nil
}

// diskFullRetry is how long Append waits before writing again after the
// file system reported ENOSPC.
const diskFullRetry = 5 * time.Second

// closedChan is a channel that is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// commitAppend writes the chunk. On success it returns the function that
// updates the in-memory state, to be called without rmu held.
func (s *Store) commitAppend(frame []byte, meta ChunkMeta, enc []byte, next map[PartitionKey]int64) (func(cost int64), error) {
	key := seqKey(meta.Seq)
	var added []PartitionKey
	var addedCost int64
	err := s.update(func(tx *bolt.Tx) error {
		added, addedCost = added[:0], 0
		if err := putFrame(tx.Bucket(bucketFrames), meta.Seq, frame); err != nil {
			return err
		}
		if err := tx.Bucket(bucketChunkMeta).Put(key, enc); err != nil {
			return fmt.Errorf("put chunk meta: %w", err)
		}
		ob := tx.Bucket(bucketOffsets)
		for k, v := range next {
			kb := partitionKeyBytes(k)
			if ob.Get(kb) == nil {
				added = append(added, k)
				addedCost += s.lay.smallCost(len(kb), 8)
			}
			if err := ob.Put(kb, encodeUint64(uint64(v))); err != nil {
				return fmt.Errorf("put offset: %w", err)
			}
		}
		return tx.Bucket(bucketState).Put(keyNextSeq, encodeUint64(meta.Seq+1))
	})
	if err != nil {
		return nil, err
	}
	return func(cost int64) { s.appended(meta, len(frame), cost, addedCost, added) }, nil
}

func (s *Store) appended(meta ChunkMeta, frameLen int, cost, offsetCost int64, added []PartitionKey) {
	s.mu.Lock()
	for _, k := range added {
		s.offsetKeys[k] = struct{}{}
	}
	if s.chunks == 0 {
		s.floor = meta.Seq
	}
	s.nextSeq = meta.Seq + 1
	s.chunks++
	s.payload += int64(frameLen)
	s.records += int64(meta.Records)
	s.used += cost + offsetCost
	s.chunkUsed += cost
	s.wakeDataLocked()
	s.mu.Unlock()
	s.m.appended.Inc()
	s.statFile()
	s.publish()
}

func checkAppend(meta ChunkMeta, next map[PartitionKey]int64) error {
	if meta.Records < 0 || meta.RawBytes < 0 || meta.Records > math.MaxInt32 || meta.RawBytes > math.MaxInt32 {
		return fmt.Errorf("record count %d or raw size %d out of range: %w", meta.Records, meta.RawBytes, ErrInvalid)
	}
	for _, r := range meta.Ranges {
		if err := checkRange(r); err != nil {
			return err
		}
	}
	return checkOffsets(next)
}

func checkOffsets(next map[PartitionKey]int64) error {
	for k, v := range next {
		if err := checkPartition(k.Topic, k.Partition); err != nil {
			return err
		}
		if v < 0 {
			return fmt.Errorf("next offset %d of %s/%d is negative: %w", v, k.Topic, k.Partition, ErrInvalid)
		}
	}
	return nil
}

// dropOldest deletes the oldest chunks above the attempted mark and records
// their ranges as losses, in one transaction. Without force it deletes only
// if the droppable chunks free at least need bytes; with force it deletes
// the single oldest droppable chunk. It returns how many it deleted. The
// caller holds wmu.
func (s *Store) dropOldest(need int64, force bool) (int, error) {
	s.mu.Lock()
	mark := s.attempted
	leased := make(map[uint64]bool, len(s.leased))
	for k := range s.leased {
		leased[k] = true
	}
	s.mu.Unlock()

	type victim struct {
		rec  stored
		cost int64
	}
	var victims []victim
	var freed int64
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketChunkMeta).Cursor()
		for k, v := c.Seek(seqKey(mark + 1)); k != nil && freed < need; k, v = c.Next() {
			seq, _ := keySeq(k)
			if leased[seq] {
				continue // leased chunks are at or below the mark; never drop one anyway
			}
			rec, err := decodeStored(seq, v)
			if err != nil {
				return err
			}
			cost := s.lay.chunkCost(rec.frameLen, len(v))
			victims = append(victims, victim{rec, cost})
			freed += cost
			if force {
				break
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("find chunks to drop: %w", err)
	}
	if len(victims) == 0 || (!force && freed < need) {
		return 0, nil
	}
	recs := make([]stored, len(victims))
	for i, v := range victims {
		recs[i] = v.rec
	}
	if err := s.deleteChunks(recs, wire.LossReasonDropOldest); err != nil {
		return 0, fmt.Errorf("drop oldest chunks: %w", err)
	}
	for _, v := range victims {
		s.log.Warn("buffer full: dropped chunk; its records are lost",
			slog.Uint64(logKeySeq, v.rec.meta.Seq), slog.String(logKeyReason, wire.LossReasonDropOldest),
			slog.Int("records", v.rec.meta.Records), slog.String(logKeyRanges, formatRanges(v.rec.meta.Ranges)))
	}
	return len(victims), nil
}

func formatRanges(rs []Range) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}
