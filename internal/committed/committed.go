// Package committed reads what transactional writers committed to one Kafka
// partition, with kafka-go.
//
// kafka-go filters no aborted transactions on any read path and hands
// control records to the caller (kafka-go #1332). Read sends raw
// read_committed fetches, so the broker stops at the last stable offset, and
// drops aborted records on the client with the algorithm of the Java
// consumer: a transactional batch is skipped when its producer has an
// aborted transaction that started at or before the batch and whose ABORT
// marker has not been passed yet.
//
// Everything in edgemirror that reads the hub reads through this package.
package committed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// Record is one committed record. Key and Value keep null (nil) and empty
// apart.
type Record struct {
	Offset  int64
	Time    time.Time
	Key     []byte
	Value   []byte
	Headers []kafka.Header
}

// Options tune Read. The zero value is usable.
type Options struct {
	// MaxBytes bounds one fetch response (default 4 MiB). Keep it well above
	// the largest record batch, so that a response always reaches past a
	// batch whose tail was compacted away.
	MaxBytes int
	// KeysOnly skips copying values (headers and keys are still read).
	KeysOnly bool
}

// ErrStop may be returned by Read's callback to end the read early; Read
// then returns nil.
var ErrStop = errors.New("stop reading")

// Read calls fn, in offset order, for every committed record of
// topic/partition with an offset in [start, end). It stops at end or at the
// partition's last stable offset, whichever comes first. An error of fn other
// than ErrStop is returned as it is.
func Read(ctx context.Context, cl *kafka.Client, topic string, partition int32, start, end int64, opt Options, fn func(*Record) error) error {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 4 << 20
	}
	off := start
	for off < end {
		res, err := fetch(ctx, cl, topic, partition, off, opt.MaxBytes)
		if err != nil {
			return err
		}
		next, err := each(res, off, end, opt, fn)
		if errors.Is(err, ErrStop) {
			return nil
		}
		if err != nil {
			return err
		}
		if next <= off {
			// Nothing at or after off below the last stable offset: the
			// rest of the range is compacted away, not yet stable, or empty.
			return nil
		}
		off = next
		if off >= res.LastStableOffset && res.LastStableOffset >= 0 {
			return nil
		}
	}
	return nil
}

func fetch(ctx context.Context, cl *kafka.Client, topic string, partition int32, off int64, maxBytes int) (*fetchapi.ResponsePartition, error) {
	req := &fetchapi.Request{
		ReplicaID:      -1,
		MaxWaitTime:    0,
		MinBytes:       0,
		MaxBytes:       int32(maxBytes),
		IsolationLevel: 1, // read_committed
		SessionID:      0,
		SessionEpoch:   -1,
		Topics: []fetchapi.RequestTopic{{Topic: topic, Partitions: []fetchapi.RequestPartition{{
			Partition: partition, CurrentLeaderEpoch: -1, FetchOffset: off, LogStartOffset: -1,
			PartitionMaxBytes: int32(maxBytes),
		}}}},
	}
	if cl.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cl.Timeout)
		defer cancel()
	}
	tr := cl.Transport
	if tr == nil {
		tr = kafka.DefaultTransport
	}
	msg, err := tr.RoundTrip(ctx, cl.Addr, req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, off, err)
	}
	res, ok := msg.(*fetchapi.Response)
	if !ok {
		return nil, fmt.Errorf("fetch %s/%d at %d: unexpected response type %T", topic, partition, off, msg)
	}
	if res.ErrorCode != 0 {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, off, kafka.Error(res.ErrorCode))
	}
	for _, t := range res.Topics {
		for i := range t.Partitions {
			p := &t.Partitions[i]
			if t.Topic != topic || p.Partition != partition {
				continue
			}
			if p.ErrorCode != 0 {
				return nil, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, off, kafka.Error(p.ErrorCode))
			}
			return p, nil
		}
	}
	return nil, fmt.Errorf("fetch %s/%d at %d: partition missing from the answer", topic, partition, off)
}

// each walks one partition's record set and returns the offset after the
// last record or marker seen.
func each(rp *fetchapi.ResponsePartition, off, end int64, opt Options, fn func(*Record) error) (int64, error) {
	next := off
	if rp.RecordSet.Records == nil {
		return next, nil
	}
	var batches []protocol.RecordReader
	if stream, ok := rp.RecordSet.Records.(*protocol.RecordStream); ok {
		batches = stream.Records
	} else {
		batches = []protocol.RecordReader{rp.RecordSet.Records}
	}
	defer func() {
		for _, b := range batches {
			drain(b)
		}
	}()
	filter := NewAbortFilter(rp.AbortedTransactions)
	for _, rb := range batches {
		recs := rb
		skip := false
		switch bt := rb.(type) {
		case *protocol.ControlBatch:
			cr, err := bt.ReadControlRecord()
			filter.Marker(bt.ProducerID, bt.BaseOffset, err == nil && cr.Type == 0)
			if bt.BaseOffset+1 > next {
				next = bt.BaseOffset + 1
			}
			continue
		case *protocol.RecordBatch:
			skip = filter.Skip(bt.ProducerID, bt.BaseOffset, bt.Attributes.Transactional())
		}
		for {
			rec, err := recs.ReadRecord()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return next, fmt.Errorf("decode records at %d: %w", next, err)
			}
			o := rec.Offset
			if o < off || skip || o >= end {
				closeRecord(rec)
				if o+1 > next && o < end {
					next = o + 1
				}
				continue
			}
			r, err := copyRecord(rec, opt.KeysOnly)
			closeRecord(rec)
			if err != nil {
				return next, err
			}
			next = o + 1
			if err := fn(r); err != nil {
				return next, err
			}
		}
	}
	return next, nil
}

func copyRecord(rec *protocol.Record, keysOnly bool) (*Record, error) {
	r := &Record{Offset: rec.Offset, Time: rec.Time}
	var err error
	if rec.Key != nil {
		if r.Key, err = protocol.ReadAll(rec.Key); err != nil {
			return nil, fmt.Errorf("read key at %d: %w", rec.Offset, err)
		}
		if r.Key == nil {
			r.Key = []byte{}
		}
	}
	if rec.Value != nil && !keysOnly {
		if r.Value, err = protocol.ReadAll(rec.Value); err != nil {
			return nil, fmt.Errorf("read value at %d: %w", rec.Offset, err)
		}
		if r.Value == nil {
			r.Value = []byte{}
		}
	}
	if len(rec.Headers) > 0 {
		r.Headers = make([]kafka.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			r.Headers[i] = kafka.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)}
		}
	}
	return r, nil
}

func closeRecord(rec *protocol.Record) {
	if rec.Key != nil {
		rec.Key.Close()
	}
	if rec.Value != nil {
		rec.Value.Close()
	}
}

func drain(rr protocol.RecordReader) {
	for {
		rec, err := rr.ReadRecord()
		if err != nil {
			return
		}
		closeRecord(rec)
	}
}
