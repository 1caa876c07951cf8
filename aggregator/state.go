package aggregator

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// stateFormat is the version of the state file layout.
const stateFormat = 1

var (
	bucketMeta   = []byte("meta")
	bucketEdges  = []byte("edges")
	bucketLosses = []byte("losses")
	keyFormat    = []byte("format")
)

// state is the aggregator's bbolt file. Nothing in it is needed for
// exactly-once (the hub is the source of truth for watermarks); it saves
// re-sending chunks after a restart and keeps the loss reports.
type state struct {
	db *bolt.DB
}

// edgeRecord is the per-edge entry of the edges bucket.
type edgeRecord struct {
	Epoch   uint64 `json:"epoch"`
	NextSeq uint64 `json:"next_seq"`
	// Retired are epochs replaced by a newer one: their chunks are refused.
	Retired []uint64 `json:"retired,omitempty"`
}

// lossRecord is one stored loss report range.
type lossRecord struct {
	Edge string `json:"edge"`
	wire.LossRange
	ReceivedAt time.Time `json:"received_at"`
}

func openState(dir string) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "aggregator.db"), 0o640, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state in %s: %w", dir, ErrStateLocked)
		}
		return nil, fmt.Errorf("open state: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyFormat); v != nil {
			if len(v) != 8 || binary.BigEndian.Uint64(v) != stateFormat {
				return fmt.Errorf("%w: state file has format %x, this aggregator reads format %d", ErrUnsupportedState, v, stateFormat)
			}
		} else if err := meta.Put(keyFormat, binary.BigEndian.AppendUint64(nil, stateFormat)); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketEdges, bucketLosses} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise state: %w", err)
	}
	return &state{db: db}, nil
}

func (s *state) close() error { return s.db.Close() }

// edge returns the stored record of an edge (zero if none).
func (s *state) edge(name string) (edgeRecord, error) {
	var rec edgeRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEdges).Get([]byte(name))
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return edgeRecord{}, fmt.Errorf("read state of edge %s: %w", name, err)
	}
	return rec, nil
}

func (s *state) setEdge(name string, rec edgeRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEdges).Put([]byte(name), v)
	}); err != nil {
		return fmt.Errorf("write state of edge %s: %w", name, err)
	}
	return nil
}

// addLosses stores loss ranges and returns those it did not have yet.
func (s *state) addLosses(edge string, ranges []wire.LossRange, at time.Time) ([]wire.LossRange, error) {
	var added []wire.LossRange
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = added[:0]
		b := tx.Bucket(bucketLosses)
		for _, r := range ranges {
			// The key is the range's identity, so that a report delivered
			// twice (its answer was lost) is stored once.
			key := make([]byte, 0, len(edge)+len(r.Topic)+len(r.Reason)+15)
			key = append(append(key, edge...), 0)
			key = append(append(key, r.Topic...), 0)
			key = binary.BigEndian.AppendUint32(key, uint32(r.Partition))
			key = binary.BigEndian.AppendUint64(key, uint64(r.FirstOffset))
			key = append(key, r.Reason...)
			if b.Get(key) != nil {
				continue
			}
			v, err := json.Marshal(lossRecord{Edge: edge, LossRange: r, ReceivedAt: at})
			if err != nil {
				return err
			}
			if err := b.Put(key, v); err != nil {
				return err
			}
			added = append(added, r)
		}
		return nil
	})
	return added, err
}
