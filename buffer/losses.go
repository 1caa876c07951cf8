package buffer

import (
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lossBatch plans loss records inside one write transaction. Its changes to
// the in-memory state are applied only after the commit succeeded.
type lossBatch struct {
	s      *Store
	nextID uint64
	tail   map[lossKey]lossRef
	cost   int64 // change of accounted bytes
	added  int   // new records
	labels map[string]int64
	now    time.Time
}

// newLossBatch starts a batch. The caller holds wmu.
func (s *Store) newLossBatch() lossBatch {
	return lossBatch{s: s, nextID: s.nextLossID, tail: make(map[lossKey]lossRef), labels: make(map[string]int64), now: time.Now()}
}

// add records l. A loss that continues the newest unreported loss of the
// same partition and reason (its First is that loss's Last+1) extends it
// instead of adding a record, so a long drop-oldest episode costs one record
// per partition, not one per chunk. Losses already returned by
// PendingLosses are never changed.
func (b *lossBatch) add(tx *bolt.Tx, l Loss) error {
	if l.At.IsZero() {
		l.At = b.now
	}
	l.At = l.At.UTC()
	lb := tx.Bucket(bucketLosses)
	key := lossKey{l.Range.Topic, l.Range.Partition, l.Reason}
	b.labels[lossLabel(l.Reason)] += l.Range.Records
	ref, ok := b.tail[key]
	if !ok {
		ref, ok = b.s.lossTail[key]
	}
	if ok && ref.id > b.s.lossHandedOut && ref.rng.Last < l.Range.First && ref.rng.Last+1 == l.Range.First {
		l.ID = ref.id
		l.Range.First = ref.rng.First
		l.Range.Records += ref.rng.Records
		enc := encodeLoss(l)
		if err := lb.Put(seqKey(l.ID), enc); err != nil {
			return fmt.Errorf("put loss %d: %w", l.ID, err)
		}
		b.cost += smallFactor * int64(len(enc)-ref.enc)
		b.tail[key] = lossRef{id: l.ID, rng: l.Range, enc: len(enc)}
		return nil
	}
	l.ID = b.nextID
	b.nextID++
	enc := encodeLoss(l)
	if err := lb.Put(seqKey(l.ID), enc); err != nil {
		return fmt.Errorf("put loss %d: %w", l.ID, err)
	}
	if err := tx.Bucket(bucketState).Put(keyNextLossID, encodeUint64(b.nextID)); err != nil {
		return fmt.Errorf("put next loss id: %w", err)
	}
	b.cost += b.s.lay.smallCost(8, len(enc))
	b.added++
	b.tail[key] = lossRef{id: l.ID, rng: l.Range, enc: len(enc)}
	return nil
}

// apply publishes a committed batch. The caller holds wmu, not mu.
func (b *lossBatch) apply() {
	s := b.s
	s.nextLossID = b.nextID
	for k, v := range b.tail {
		s.lossTail[k] = v
	}
	s.mu.Lock()
	s.losses += b.added
	s.mu.Unlock()
}

// AdvanceOffsets sets next offsets and records losses in one transaction,
// for progress that produced no chunk (for example records the edge
// cluster's retention deleted before they were read). Loss.ID is assigned
// here; a zero Loss.At becomes now.
func (s *Store) AdvanceOffsets(next map[PartitionKey]int64, losses []Loss) error {
	if err := checkOffsets(next); err != nil {
		return fmt.Errorf("advance offsets: %w", err)
	}
	for _, l := range losses {
		if err := checkRange(l.Range); err != nil {
			return fmt.Errorf("advance offsets: loss: %w", err)
		}
		if l.Reason == "" || len(l.Reason) > MaxReasonLen {
			return fmt.Errorf("advance offsets: loss reason must be 1 to %d bytes: %w", MaxReasonLen, ErrInvalid)
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for {
		if s.isClosed() {
			return fmt.Errorf("advance offsets: %w", ErrClosed)
		}
		var (
			lb        lossBatch
			added     []PartitionKey
			addedCost int64
		)
		err := s.update(func(tx *bolt.Tx) error {
			lb = s.newLossBatch()
			added, addedCost = added[:0], 0
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
			for _, l := range losses {
				if err := lb.add(tx, l); err != nil {
					return err
				}
			}
			return nil
		})
		if isFull(err) {
			// Small updates live in the reserve; reaching this means the
			// file is full to the last page. Make room if the policy may.
			if s.opts.Policy == PolicyDropOldest {
				if n, derr := s.dropOldest(1, true); derr == nil && n > 0 {
					continue
				}
			}
			return fmt.Errorf("advance offsets: %w (%w)", ErrFull, err)
		}
		if err != nil {
			return fmt.Errorf("advance offsets: %w", err)
		}
		lb.apply()
		s.mu.Lock()
		for _, k := range added {
			s.offsetKeys[k] = struct{}{}
		}
		s.used += addedCost + lb.cost
		s.mu.Unlock()
		for label, n := range lb.labels {
			s.m.droppedRecords.WithLabelValues(label).Add(float64(n))
		}
		s.statFile()
		s.publish()
		return nil
	}
}

// Offsets returns the stored next offset of every partition.
func (s *Store) Offsets() (map[PartitionKey]int64, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("read offsets: %w", ErrClosed)
	}
	out := make(map[PartitionKey]int64)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOffsets).ForEach(func(k, v []byte) error {
			pk, err := decodePartitionKey(k)
			if err != nil {
				return err
			}
			n, ok := decodeUint64(v)
			if !ok {
				return fmt.Errorf("offset of %s/%d: %w", pk.Topic, pk.Partition, ErrCorrupt)
			}
			out[pk] = int64(n)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read offsets: %w", err)
	}
	return out, nil
}

// PendingLosses returns the losses not yet acknowledged, by ID. Their ranges
// are final: a returned loss is never extended afterwards.
func (s *Store) PendingLosses() ([]Loss, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return nil, fmt.Errorf("read pending losses: %w", ErrClosed)
	}
	var out []Loss
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLosses).ForEach(func(k, v []byte) error {
			id, _ := keySeq(k)
			l, err := decodeLoss(id, v)
			if err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read pending losses: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if n := len(out); n > 0 && out[n-1].ID > s.lossHandedOut {
		s.lossHandedOut = out[n-1].ID
	}
	return out, nil
}

// AckLosses deletes losses the aggregator has recorded. Unknown IDs are
// ignored.
func (s *Store) AckLosses(ids []uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isClosed() {
		return fmt.Errorf("ack losses: %w", ErrClosed)
	}
	var (
		cost    int64
		removed map[uint64]bool
	)
	err := s.update(func(tx *bolt.Tx) error {
		cost, removed = 0, make(map[uint64]bool)
		lb := tx.Bucket(bucketLosses)
		for _, id := range ids {
			v := lb.Get(seqKey(id))
			if v == nil || removed[id] {
				continue
			}
			cost += s.lay.smallCost(8, len(v))
			if err := lb.Delete(seqKey(id)); err != nil {
				return fmt.Errorf("delete loss %d: %w", id, err)
			}
			removed[id] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack losses: %w", err)
	}
	for k, ref := range s.lossTail {
		if removed[ref.id] {
			delete(s.lossTail, k)
		}
	}
	s.mu.Lock()
	s.losses -= len(removed)
	s.used -= cost
	s.wakeSpaceLocked()
	s.mu.Unlock()
	s.publish()
	return nil
}
