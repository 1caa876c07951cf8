package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/edgemirror/edgemirror/internal/committed"
)

// fleetRecord is one committed record of a fleet topic.
type fleetRecord struct {
	offset     int64
	key, value []byte // nil for null
}

// fetchCommitted reads committed records of one partition from offset on,
// with read_committed and the aborted-transaction filter of the Java
// consumer: kafka-go's Client.Fetch hands aborted records to the caller
// (kafka-go #1332), and loss events are written in transactions. It
// returns the records and the offset after the last record or control
// marker seen (offset itself when the answer was empty).
func fetchCommitted(ctx context.Context, cl *kafka.Client, topic string, partition int, offset int64) ([]fleetRecord, int64, error) {
	req := &fetchapi.Request{
		ReplicaID:      -1,
		MaxWaitTime:    100,
		MinBytes:       1,
		MaxBytes:       4 << 20,
		IsolationLevel: 1,
		SessionEpoch:   -1,
		Topics: []fetchapi.RequestTopic{{Topic: topic, Partitions: []fetchapi.RequestPartition{{
			Partition: int32(partition), CurrentLeaderEpoch: -1, FetchOffset: offset, LogStartOffset: -1,
			PartitionMaxBytes: 4 << 20,
		}}}},
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := cl.Transport.RoundTrip(rctx, cl.Addr, req)
	if err != nil {
		return nil, offset, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, err)
	}
	res, ok := msg.(*fetchapi.Response)
	if !ok {
		return nil, offset, fmt.Errorf("fetch %s/%d: unexpected response type %T", topic, partition, msg)
	}
	if res.ErrorCode != 0 {
		return nil, offset, fmt.Errorf("fetch %s/%d: %w", topic, partition, kafka.Error(res.ErrorCode))
	}
	for _, t := range res.Topics {
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			if t.Topic != topic || int(rp.Partition) != partition {
				drain(rp.RecordSet.Records)
				continue
			}
			if rp.ErrorCode != 0 {
				drain(rp.RecordSet.Records)
				return nil, offset, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, kafka.Error(rp.ErrorCode))
			}
			return committedRecords(rp, offset)
		}
	}
	return nil, offset, nil
}

// committedRecords applies the aborted-transaction filter to one
// partition's answer.
func committedRecords(rp *fetchapi.ResponsePartition, from int64) ([]fleetRecord, int64, error) {
	next := from
	if rp.RecordSet.Records == nil {
		return nil, next, nil
	}
	var batches []protocol.RecordReader
	if stream, ok := rp.RecordSet.Records.(*protocol.RecordStream); ok {
		batches = stream.Records
	} else {
		batches = []protocol.RecordReader{rp.RecordSet.Records}
	}
	filter := committed.NewAbortFilter(rp.AbortedTransactions)
	var (
		out      []fleetRecord
		firstErr error
	)
	for _, rb := range batches {
		skip := false
		switch bt := rb.(type) {
		case *protocol.ControlBatch:
			cr, err := bt.ReadControlRecord()
			filter.Marker(bt.ProducerID, bt.BaseOffset, err == nil && cr.Type == 0) // ABORT ends an aborted transaction
			next = max(next, bt.BaseOffset+1)
			drain(bt.Records)
			continue
		case *protocol.RecordBatch:
			skip = filter.Skip(bt.ProducerID, bt.BaseOffset, bt.Attributes.Transactional())
		}
		for {
			rec, err := rb.ReadRecord()
			if err != nil {
				if !errors.Is(err, io.EOF) && firstErr == nil {
					firstErr = err
				}
				break
			}
			off := rec.Offset
			if off < from || skip {
				closeRec(rec)
				next = max(next, off+1)
				continue
			}
			var fr fleetRecord
			var kerr, verr error
			fr.offset = off
			if rec.Key != nil {
				fr.key, kerr = protocol.ReadAll(rec.Key)
			}
			if rec.Value != nil {
				fr.value, verr = protocol.ReadAll(rec.Value)
				if fr.value == nil && verr == nil {
					fr.value = []byte{}
				}
			}
			closeRec(rec)
			if err := errors.Join(kerr, verr); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				break
			}
			out = append(out, fr)
			next = max(next, off+1)
		}
	}
	if firstErr != nil {
		return nil, from, fmt.Errorf("decode records at %d: %w", from, firstErr)
	}
	return out, next, nil
}

func closeRec(rec *protocol.Record) {
	if rec.Key != nil {
		rec.Key.Close()
	}
	if rec.Value != nil {
		rec.Value.Close()
	}
}

// drain reads a record reader to its end so that its pooled pages are
// released.
func drain(rr protocol.RecordReader) {
	if rr == nil {
		return
	}
	for {
		rec, err := rr.ReadRecord()
		if err != nil {
			return
		}
		closeRec(rec)
	}
}
