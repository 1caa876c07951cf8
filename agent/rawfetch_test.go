package agent

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edgemirror/edgemirror/buffer"
)

// v2Batch returns a record batch of n records at offsets base..base+n-1
// whose header says its last offset is base+lastDelta, as the log cleaner
// leaves a batch whose last records it removed.
func v2Batch(base int64, n int, lastDelta int32) []byte {
	var body []byte
	for i := 0; i < n; i++ {
		rec := kmsg.Record{OffsetDelta: int32(i), Value: []byte("v")}
		rec.Length = int32(len(rec.AppendTo(nil)) - 1)
		body = rec.AppendTo(body)
	}
	b := kmsg.RecordBatch{FirstOffset: base, Magic: 2, LastOffsetDelta: lastDelta, ProducerID: -1,
		ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(n), Records: body}
	b.Length = int32(len(b.AppendTo(nil)) - 12)
	return b.AppendTo(nil)
}

// TestBatchLastOffsets: the scan of a raw fetch response finds, for every
// partition, the header's last offset of its last complete batch (not the
// last record's offset), skips a batch cut off at the end of the response,
// and reads every field layout of Fetch v4 to v11.
func TestBatchLastOffsets(t *testing.T) {
	compacted := v2Batch(100, 3, 9) // records 100..102, last offset 109
	cut := v2Batch(110, 5, 4)
	records := append(append(append([]byte(nil), v2Batch(90, 10, 9)...), compacted...), cut[:len(cut)-7]...)
	for _, version := range []int16{4, 5, 7, 11} {
		res := kmsg.NewFetchResponse()
		res.Version = version
		tp := kmsg.NewFetchResponseTopic()
		tp.Topic = "t"
		p0 := kmsg.NewFetchResponseTopicPartition()
		p0.Partition = 0
		p0.HighWatermark = 115
		p0.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 7, FirstOffset: 3}}
		p0.RecordBatches = records
		p1 := kmsg.NewFetchResponseTopicPartition()
		p1.Partition = 1 // no records
		p2 := kmsg.NewFetchResponseTopicPartition()
		p2.Partition = 2
		p2.RecordBatches = cut[:30] // only a cut-off batch
		tp.Partitions = []kmsg.FetchResponseTopicPartition{p0, p1, p2}
		res.Topics = []kmsg.FetchResponseTopic{tp}
		body := append([]byte{0, 0, 0, 42}, res.AppendTo(nil)...) // correlation id, then the body
		got, err := batchLastOffsets(body, version)
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		want := map[buffer.PartitionKey]int64{{Topic: "t", Partition: 0}: 109}
		if len(got) != len(want) || got[buffer.PartitionKey{Topic: "t", Partition: 0}] != 109 {
			t.Errorf("v%d: last offsets %v, want %v", version, got, want)
		}
		if _, err := batchLastOffsets(body[:len(body)-3], version); err == nil {
			t.Errorf("v%d: a truncated response scanned without error", version)
		}
	}
}
