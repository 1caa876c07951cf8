package buffer

import (
	"context"
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Lease returns the lowest-Seq stored chunk that is not leased, waiting
// until there is one, ctx ends or Close is called.
//
// Before a chunk is handed out for the first time, the attempted mark is
// persisted to at least its Seq (in blocks of 16, so most Leases write
// nothing). Drop-oldest never deletes a chunk at or below the mark, so a
// chunk that may have reached the aggregator is never reported lost, even
// after a restart.
//
// A chunk whose frame no longer matches the checksum written with it is
// deleted, its ranges recorded as losses with wire.LossReasonBufferCorrupt and logged, and
// Lease moves on to the next chunk.
func (s *Store) Lease(ctx context.Context) (Chunk, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Chunk{}, fmt.Errorf("lease chunk: %w", ErrClosed)
		}
		var (
			ch    Chunk
			rec   stored
			found bool
		)
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketChunkMeta).Cursor()
			for k, v := c.Seek(seqKey(s.floor)); k != nil; k, v = c.Next() {
				seq, _ := keySeq(k)
				if _, ok := s.leased[seq]; ok {
					continue
				}
				r, err := decodeStored(seq, v)
				if err != nil {
					return err
				}
				rec, found = r, true
				if seq > s.attempted {
					return nil // the mark moves first; the frame is read on the next pass
				}
				frame, err := getFrame(tx.Bucket(bucketFrames), seq, r.frameLen)
				if err != nil {
					return err
				}
				ch = Chunk{Seq: seq, Frame: frame, Meta: r.meta}
				return nil
			}
			return nil
		})
		if err != nil {
			s.mu.Unlock()
			return Chunk{}, fmt.Errorf("lease chunk: %w", err)
		}
		switch {
		case !found:
			wait := s.dataCh
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return Chunk{}, fmt.Errorf("lease chunk: %w", ctx.Err())
			case <-s.closedCh:
				return Chunk{}, fmt.Errorf("lease chunk: %w", ErrClosed)
			case <-wait:
			}
		case rec.meta.Seq > s.attempted:
			s.mu.Unlock()
			if err := s.raiseAttempted(rec.meta.Seq); err != nil {
				return Chunk{}, fmt.Errorf("lease chunk %d: %w", rec.meta.Seq, err)
			}
		case len(ch.Frame) != rec.frameLen || frameChecksum(ch.Frame) != rec.crc:
			s.mu.Unlock()
			if err := s.dropCorrupt(rec); err != nil {
				return Chunk{}, fmt.Errorf("lease chunk %d: %w", rec.meta.Seq, err)
			}
		default:
			s.leased[ch.Seq] = struct{}{}
			s.m.leased.Set(float64(len(s.leased)))
			s.mu.Unlock()
			return ch, nil
		}
	}
}

// raiseAttempted persists an attempted mark of at least seq.
func (s *Store) raiseAttempted(seq uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	if seq <= s.attempted {
		return nil
	}
	mark := seq + attemptBlock
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyAttempted, encodeUint64(mark))
	})
	if err != nil {
		return fmt.Errorf("persist attempted mark %d: %w", mark, err)
	}
	s.mu.Lock()
	s.attempted = mark
	s.mu.Unlock()
	return nil
}

func (s *Store) dropCorrupt(rec stored) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	s.log.Error("stored chunk does not match its checksum; deleting it and reporting its records as lost",
		slog.Uint64(logKeySeq, rec.meta.Seq), slog.String(logKeyReason, wire.LossReasonBufferCorrupt),
		slog.String(logKeyRanges, formatRanges(rec.meta.Ranges)))
	return s.deleteChunks([]stored{rec}, wire.LossReasonBufferCorrupt)
}

// Release gives a lease back without an answer (shutdown, or the shipper
// gave up on this attempt). The chunk is the next one Lease returns.
func (s *Store) Release(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leased[seq]; !ok {
		return
	}
	delete(s.leased, seq)
	s.m.leased.Set(float64(len(s.leased)))
	s.wakeDataLocked()
}

// Ack deletes a chunk the aggregator acknowledged and wakes blocked
// Appends. It returns ErrNotFound if the chunk is not stored (for example
// DropBefore removed it); that is harmless.
func (s *Store) Ack(seq uint64) error {
	if err := s.removeOne(seq, ""); err != nil {
		return fmt.Errorf("ack chunk %d: %w", seq, err)
	}
	return nil
}

// Reject deletes a chunk the aggregator refused permanently and records its
// ranges as losses with reason, in one transaction.
func (s *Store) Reject(seq uint64, reason string) error {
	if reason == "" || len(reason) > MaxReasonLen {
		return fmt.Errorf("reject chunk %d: reason must be 1 to %d bytes: %w", seq, MaxReasonLen, ErrInvalid)
	}
	if err := s.removeOne(seq, reason); err != nil {
		return fmt.Errorf("reject chunk %d: %w", seq, err)
	}
	return nil
}

func (s *Store) removeOne(seq uint64, reason string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	var rec stored
	var found bool
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketChunkMeta).Get(seqKey(seq))
		if v == nil {
			return nil
		}
		r, err := decodeStored(seq, v)
		rec, found = r, err == nil
		return err
	})
	if err != nil {
		return err
	}
	if !found {
		s.Release(seq)
		return ErrNotFound
	}
	return s.deleteChunks([]stored{rec}, reason)
}

// DropBefore deletes every chunk with Seq < seq: the aggregator says it has
// applied them already. They are not losses. Leases on them end. It returns
// how many chunks it deleted.
func (s *Store) DropBefore(seq uint64) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return 0, fmt.Errorf("drop chunks before %d: %w", seq, ErrClosed)
	}
	var recs []stored
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketChunkMeta).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			n, _ := keySeq(k)
			if n >= seq {
				break
			}
			r, err := decodeStored(n, v)
			if err != nil {
				return err
			}
			r.meta.Ranges = nil // not needed, keep memory small
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("drop chunks before %d: %w", seq, err)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := s.deleteChunks(recs, ""); err != nil {
		return 0, fmt.Errorf("drop chunks before %d: %w", seq, err)
	}
	return len(recs), nil
}

// deleteChunks deletes chunks in one transaction and, when reason is not
// empty, records each of their ranges as a loss in the same transaction.
// The caller holds wmu.
func (s *Store) deleteChunks(recs []stored, reason string) error {
	var (
		cost, payload, records int64
		lb                     lossBatch
		lost                   int64
	)
	err := s.update(func(tx *bolt.Tx) error {
		cost, payload, records, lost = 0, 0, 0, 0
		lb = s.newLossBatch()
		fb, mb := tx.Bucket(bucketFrames), tx.Bucket(bucketChunkMeta)
		for _, r := range recs {
			key := seqKey(r.meta.Seq)
			v := mb.Get(key)
			if v == nil {
				return fmt.Errorf("chunk %d vanished: %w", r.meta.Seq, ErrCorrupt)
			}
			cost += s.lay.chunkCost(r.frameLen, len(v))
			payload += int64(r.frameLen)
			records += int64(r.meta.Records)
			if err := deleteFrame(fb, r.meta.Seq, r.frameLen); err != nil {
				return err
			}
			if err := mb.Delete(key); err != nil {
				return fmt.Errorf("delete chunk %d meta: %w", r.meta.Seq, err)
			}
			if reason == "" {
				continue
			}
			for _, rg := range r.meta.Ranges {
				lost += rg.Records
				if err := lb.add(tx, Loss{Range: rg, Reason: reason}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	lb.apply()

	s.mu.Lock()
	floorGone := false
	for _, r := range recs {
		delete(s.leased, r.meta.Seq)
		floorGone = floorGone || r.meta.Seq == s.floor
	}
	s.chunks -= len(recs)
	s.payload -= payload
	s.records -= records
	s.used += lb.cost - cost
	s.chunkUsed -= cost
	if s.chunks == 0 {
		s.floor = s.nextSeq
	} else if floorGone {
		s.floor = s.firstSeqLocked()
	}
	s.wakeSpaceLocked()
	s.mu.Unlock()

	if reason == "" {
		s.m.acked.Add(float64(len(recs)))
	} else {
		label := lossLabel(reason)
		s.m.droppedChunks.WithLabelValues(label).Add(float64(len(recs)))
		s.m.droppedRecords.WithLabelValues(label).Add(float64(lost))
	}
	s.statFile()
	s.publish()
	return nil
}

// firstSeqLocked reads the lowest stored seq. The caller holds mu and wmu.
func (s *Store) firstSeqLocked() uint64 {
	first := s.nextSeq
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketChunkMeta).Cursor().First(); k != nil {
			first, _ = keySeq(k)
		}
		return nil
	})
	return first
}
