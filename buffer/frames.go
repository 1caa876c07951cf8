package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Frames are stored in segments of at most segmentSize bytes, each segment
// alone in its own nested bucket of the "frames" bucket, keyed by seq and
// segment index:
//
//	frames/
//	  <seq 8 bytes><index 4 bytes>/   nested bucket
//	    "f" -> segment bytes           one leaf page run of <= 16 pages
//
// Alone in its bucket, a segment is written once and never copied again when
// its neighbours change (bbolt keeps at least four elements in a leaf page
// whatever their size, so big values side by side would be rewritten on
// every append). Equal 64 KiB runs keep the free space of a churning file
// usable: a hole left by any deleted segment fits any later segment, where
// whole frames of mixed sizes leave holes that a bigger frame cannot use.

const (
	segmentPages = 16
	segmentSize  = segmentPages*pageSize - pageHeaderSize - leafElemSize - frameKeyLen // 65503
	segKeyLen    = 12
)

func segKey(seq uint64, i uint32) []byte {
	b := make([]byte, segKeyLen)
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint32(b[8:], i)
	return b
}

// segments is the number of segments of a frame of n bytes (at least one).
func segments(n int) int {
	if n <= segmentSize {
		return 1
	}
	return (n + segmentSize - 1) / segmentSize
}

func putFrame(b *bolt.Bucket, seq uint64, frame []byte) error {
	for i := 0; i < segments(len(frame)); i++ {
		seg := frame[i*segmentSize : min(len(frame), (i+1)*segmentSize)]
		sb, err := b.CreateBucket(segKey(seq, uint32(i)))
		if err != nil {
			return fmt.Errorf("create segment %d of chunk %d: %w", i, seq, err)
		}
		// bbolt keeps a reference to seg until commit; Append does not
		// return before that.
		if err := sb.Put(frameKey, seg); err != nil {
			return fmt.Errorf("put segment %d of chunk %d: %w", i, seq, err)
		}
	}
	return nil
}

// getFrame copies the frame of seq out of the transaction.
func getFrame(b *bolt.Bucket, seq uint64, frameLen int) ([]byte, error) {
	out := make([]byte, 0, frameLen)
	for i := 0; i < segments(frameLen); i++ {
		sb := b.Bucket(segKey(seq, uint32(i)))
		if sb == nil {
			return nil, fmt.Errorf("segment %d of chunk %d missing: %w", i, seq, ErrCorrupt)
		}
		seg := sb.Get(frameKey)
		if len(out)+len(seg) > frameLen {
			return nil, fmt.Errorf("chunk %d is longer than %d bytes: %w", seq, frameLen, ErrCorrupt)
		}
		out = append(out, seg...)
	}
	return out, nil
}

func deleteFrame(b *bolt.Bucket, seq uint64, frameLen int) error {
	for i := 0; i < segments(frameLen); i++ {
		if err := b.DeleteBucket(segKey(seq, uint32(i))); err != nil {
			return fmt.Errorf("delete segment %d of chunk %d: %w", i, seq, err)
		}
	}
	return nil
}

// checkSegments advances c over the segment buckets of seq, which must be
// exactly segments(frameLen) nested buckets. k and v are the cursor's
// current position; it returns the position after them.
func checkSegments(c *bolt.Cursor, k, v []byte, seq uint64, frameLen int) ([]byte, []byte, error) {
	for i := 0; i < segments(frameLen); i++ {
		if !bytes.Equal(k, segKey(seq, uint32(i))) || v != nil {
			return nil, nil, fmt.Errorf("segment %d of chunk %d missing: %w", i, seq, ErrCorrupt)
		}
		k, v = c.Next()
	}
	return k, v, nil
}
