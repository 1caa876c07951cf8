package buffer

import "testing"

func TestLayout(t *testing.T) {
	for _, maxBytes := range []int64{MinMaxBytes, 16 << 20, 256 << 20, 1 << 30, 10 << 30, 100 << 30} {
		for _, sync := range []bool{false, true} {
			l, err := newLayout(maxBytes, pageSize, sync)
			if err != nil {
				t.Fatal(maxBytes, err)
			}
			meta := l.smallCost(8, maxMetaEstimate)
			if c := l.frameCost(l.maxFrame) + meta; c > l.maxChunk {
				t.Errorf("MaxBytes %d: cost of the largest frame %d exceeds the chunk limit %d", maxBytes, c, l.maxChunk)
			}
			if l.maxFrame < maxFrameCap && l.frameCost(l.maxFrame+pageSize)+meta <= l.maxChunk {
				t.Errorf("MaxBytes %d: largest frame %d is a page or more below the limit", maxBytes, l.maxFrame)
			}
			if l.budget <= 0 || l.budget+l.reserve != maxBytes || l.allocSize&(l.allocSize-1) != 0 {
				t.Errorf("MaxBytes %d: %+v", maxBytes, l)
			}
			t.Logf("MaxBytes %d sync %v: budget %d (%.1f%%) alloc %d max frame %d", maxBytes, sync, l.budget,
				100*float64(l.budget)/float64(maxBytes), l.allocSize, l.maxFrame)
		}
	}
	l, _ := newLayout(16<<20, pageSize, false)
	for _, c := range []struct {
		n    int
		want int64
	}{
		{0, l.smallCost(segKeyLen, bucketHeaderSize+pageHeaderSize+leafElemSize+frameKeyLen)},
		{segmentSize, 16*pageSize + l.smallCost(segKeyLen, bucketHeaderSize)},
		{segmentSize + 1, 16*pageSize + l.smallCost(segKeyLen, bucketHeaderSize) +
			l.smallCost(segKeyLen, bucketHeaderSize+pageHeaderSize+leafElemSize+frameKeyLen+1)},
		{segmentSize + 2000, 17*pageSize + 2*l.smallCost(segKeyLen, bucketHeaderSize)},
		{2 * segmentSize, 32*pageSize + 2*l.smallCost(segKeyLen, bucketHeaderSize)},
	} {
		if got := l.frameCost(c.n); got != c.want {
			t.Errorf("frameCost(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
