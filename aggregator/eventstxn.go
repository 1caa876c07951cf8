package aggregator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// eventsTxnTimeout is the transaction timeout of a loss event write: if an
// aggregator dies inside one, the hub aborts it after this long (and any
// other aggregator taking the edge's events aborts it at once).
const eventsTxnTimeout = 10 * time.Second

// eventsTransactionalID is the transactional id under which loss events
// of an edge are written, by whichever aggregator.
func eventsTransactionalID(edge string) string { return "edgemirror-events-" + edge }

// eventsTxn is one aggregator's hold on an edge's loss events: the
// producer id and epoch InitProducerID gave it. Taking it fences every
// earlier holder, in any aggregator: the hub aborts that holder's open
// transaction and refuses its later writes and commits.
type eventsTxn struct {
	cl    *kafka.Client
	id    string
	pid   int
	epoch int
	seq   map[int]int32 // next base sequence per partition
}

// beginEvents takes the edge's loss events (see eventsTxn). The hub
// answers CONCURRENT_TRANSACTIONS while it aborts an earlier holder's
// transaction; that is retried until ctx ends.
func beginEvents(ctx context.Context, cl *kafka.Client, edge string) (*eventsTxn, error) {
	id := eventsTransactionalID(edge)
	for {
		// ProducerID/Epoch -1: a fresh take, which bumps the epoch (kafka-go
		// sends its zero values otherwise, which the hub refuses with
		// INVALID_PRODUCER_ID_MAPPING).
		res, err := cl.InitProducerID(ctx, &kafka.InitProducerIDRequest{TransactionalID: id,
			TransactionTimeoutMs: int(eventsTxnTimeout / time.Millisecond), ProducerID: -1, ProducerEpoch: -1})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil {
			return &eventsTxn{cl: cl, id: id, pid: res.Producer.ProducerID, epoch: res.Producer.ProducerEpoch,
				seq: make(map[int]int32)}, nil
		}
		if !errors.Is(err, kafka.ConcurrentTransactions) && !errors.Is(err, kafka.GroupLoadInProgress) &&
			!errors.Is(err, kafka.NotCoordinatorForGroup) && !errors.Is(err, kafka.GroupCoordinatorNotAvailable) {
			return nil, fmt.Errorf("take the loss events of %s (InitProducerId %s): %w", edge, id, err)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("take the loss events of %s: %w (last answer: %v)", edge, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// produce appends values, keyed by key, to topic/partition inside the
// transaction.
func (t *eventsTxn) produce(ctx context.Context, topic string, partition int, key []byte, values [][]byte) error {
	if _, added := t.seq[partition]; !added {
		res, err := t.cl.AddPartitionsToTxn(ctx, &kafka.AddPartitionsToTxnRequest{TransactionalID: t.id,
			ProducerID: t.pid, ProducerEpoch: t.epoch,
			Topics: map[string][]kafka.AddPartitionToTxn{topic: {{Partition: partition}}}})
		if err == nil {
			for _, p := range res.Topics[topic] {
				if p.Partition == partition && p.Error != nil {
					err = p.Error
				}
			}
		}
		if err != nil {
			return fmt.Errorf("add %s/%d to transaction %s: %w", topic, partition, t.id, err)
		}
		t.seq[partition] = 0
	}
	batch, err := txnBatch(key, values, int64(t.pid), int16(t.epoch), t.seq[partition])
	if err != nil {
		return err
	}
	res, err := t.cl.RawProduce(ctx, &kafka.RawProduceRequest{Topic: topic, Partition: partition,
		RequiredAcks: kafka.RequireAll, TransactionalID: t.id,
		RawRecords: protocol.RawRecordSet{Reader: bytes.NewReader(batch)}})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		return fmt.Errorf("write to %s/%d in transaction %s: %w", topic, partition, t.id, err)
	}
	t.seq[partition] += int32(len(values))
	return nil
}

// end commits or aborts the transaction.
func (t *eventsTxn) end(ctx context.Context, commit bool) error {
	res, err := t.cl.EndTxn(ctx, &kafka.EndTxnRequest{TransactionalID: t.id, ProducerID: t.pid,
		ProducerEpoch: t.epoch, Committed: commit})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		verb := "commit"
		if !commit {
			verb = "abort"
		}
		return fmt.Errorf("%s transaction %s: %w", verb, t.id, err)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// txnBatch encodes values as one transactional record batch (v2) of
// producer pid/epoch from base sequence seq. kafka-go's encoder writes -1
// for the producer fields; they are set here and the CRC recomputed
// (layout: docs of the Kafka protocol, record batch v2).
func txnBatch(key []byte, values [][]byte, pid int64, epoch int16, seq int32) ([]byte, error) {
	now := time.Now()
	recs := make([]protocol.Record, len(values))
	for i, v := range values {
		recs[i] = protocol.Record{Offset: int64(i), Time: now, Key: protocol.NewBytes(key), Value: protocol.NewBytes(v)}
	}
	rs := protocol.RecordSet{Version: 2, Attributes: protocol.Transactional, Records: protocol.NewRecordReader(recs...)}
	var buf bytes.Buffer
	if _, err := rs.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encode record batch: %w", err)
	}
	b := buf.Bytes()
	// 4-byte size prefix, then the batch.
	if len(b) < 4+61 {
		return nil, fmt.Errorf("encode record batch: %d bytes is too short", len(b))
	}
	batch := b[4:]
	if batch[16] != 2 {
		return nil, fmt.Errorf("encode record batch: magic %d, want 2", batch[16])
	}
	binary.BigEndian.PutUint64(batch[43:], uint64(pid))
	binary.BigEndian.PutUint16(batch[51:], uint16(epoch))
	binary.BigEndian.PutUint32(batch[53:], uint32(seq))
	binary.BigEndian.PutUint32(batch[17:], crc32.Checksum(batch[21:], castagnoli))
	return b, nil
}
