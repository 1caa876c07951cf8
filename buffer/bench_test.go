package buffer

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAppend measures durable appends (one bbolt transaction with fsync
// per chunk) of typical compressed chunk sizes. The store is emptied outside
// the timer whenever it is half full, so any b.N runs without blocking.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("frame=%dKiB", size>>10), func(b *testing.B) {
			benchAppend(b, size, false)
		})
	}
}

// BenchmarkAppendAck measures the steady state of a caught-up agent: every
// append is followed by the lease and acknowledgement of that chunk (two
// commits per chunk).
func BenchmarkAppendAck(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("frame=%dKiB", size>>10), func(b *testing.B) {
			benchAppend(b, size, true)
		})
	}
}

func benchAppend(b *testing.B, size int, ack bool) {
	s := openTest(b, b.TempDir(), Options{MaxBytes: 256 << 20, Policy: PolicyBlock})
	ctx := context.Background()
	frame := frameFor(1, size)
	key := PartitionKey{Topic: "sensors", Partition: 0}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq := s.NextSeq()
		first := int64(seq-1) * 1000
		meta := ChunkMeta{Seq: seq, Records: 1000, RawBytes: size * 8,
			Ranges: []Range{{Topic: key.Topic, Partition: key.Partition, First: first, Last: first + 999, Records: 1000}}}
		if err := s.Append(ctx, frame, meta, map[PartitionKey]int64{key: first + 1000}); err != nil {
			b.Fatal(err)
		}
		if ack {
			c, err := s.Lease(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Ack(c.Seq); err != nil {
				b.Fatal(err)
			}
		} else if st := s.Stats(); st.UsedBytes > st.BudgetBytes/2 {
			b.StopTimer()
			if _, err := s.DropBefore(s.NextSeq()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}
