package buffer

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Sequence numbers and epochs after a rollback.
//
// A buffer directory can be rolled back: restored from a backup or a VM
// snapshot, copied to another machine, or cut short by storage that
// acknowledged fsync without writing. The rolled-back file hands out
// sequence numbers again that the aggregator has already applied, with
// other content. MoveNextSeq and RenewEpoch are the two ways out; the
// shipper decides which at resume (see package agent).

// MoveNextSeq moves NextSeq up to n, persisted, so that no sequence number
// below n is used again. It does nothing (moved false) when NextSeq is
// already at or past n, or when NextSeq is no longer ifNext: a chunk was
// appended meanwhile under a number the caller did not expect. An Append
// prepared before the move fails with ErrSeq and must be prepared again.
func (s *Store) MoveNextSeq(n, ifNext uint64) (moved bool, err error) {
	s.amu.Lock()
	defer s.amu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	closed, cur := s.closed, s.nextSeq
	s.mu.Unlock()
	if closed {
		return false, fmt.Errorf("move next sequence number: %w", ErrClosed)
	}
	if cur >= n || cur != ifNext {
		return false, nil
	}
	err = s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyNextSeq, encodeUint64(n))
	})
	if err != nil {
		return false, fmt.Errorf("move next sequence number to %d: %w", n, err)
	}
	s.mu.Lock()
	s.nextSeq = n
	if s.chunks == 0 {
		s.floor = n
	}
	s.mu.Unlock()
	s.log.Warn("next sequence number moved past what the aggregator has seen",
		slog.Uint64("from", cur), slog.Uint64("to", n))
	return true, nil
}

// RenewEpoch gives the buffer a new random epoch, persisted, and returns the
// old and the new one. Chunks, offsets and losses stay; their sequence
// numbers are then new to every aggregator, which applies them in order
// from Floor on and deduplicates their records by source offset. The
// aggregator refuses chunks of the old epoch from then on (409).
func (s *Store) RenewEpoch() (old, renewed uint64, err error) {
	s.amu.Lock()
	defer s.amu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return 0, 0, fmt.Errorf("renew epoch: %w", ErrClosed)
	}
	old = s.epoch.Load()
	var b [8]byte
	for renewed == 0 || renewed == old {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, 0, fmt.Errorf("renew epoch: %w", err)
		}
		renewed = binary.BigEndian.Uint64(b[:])
	}
	err = s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyEpoch, encodeUint64(renewed))
	})
	if err != nil {
		return 0, 0, fmt.Errorf("renew epoch: %w", err)
	}
	s.epoch.Store(renewed)
	s.log.Warn("buffer has a new epoch", slog.Uint64("old_epoch", old), slog.Uint64("epoch", renewed))
	return old, renewed, nil
}

// Held is what the stored chunks hold of one partition: the lowest and
// highest offset and the number of records, over every stored chunk.
type Held struct {
	Range
	Chunks int
}

// HeldRanges returns, per partition, what the stored chunks hold, sorted by
// topic and partition. It reads chunk metadata only, never frames.
func (s *Store) HeldRanges() ([]Held, error) {
	byKey := make(map[PartitionKey]*Held)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunkMeta).ForEach(func(k, v []byte) error {
			seq, _ := keySeq(k)
			rec, err := decodeStored(seq, v)
			if err != nil {
				return err
			}
			for _, r := range rec.meta.Ranges {
				key := PartitionKey{Topic: r.Topic, Partition: r.Partition}
				h := byKey[key]
				if h == nil {
					byKey[key] = &Held{Range: r, Chunks: 1}
					continue
				}
				h.First, h.Last = min(h.First, r.First), max(h.Last, r.Last)
				h.Records += r.Records
				h.Chunks++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list held ranges: %w", err)
	}
	out := make([]Held, 0, len(byKey))
	for _, h := range byKey {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}
