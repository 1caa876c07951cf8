package buffer

import "fmt"

// Size accounting.
//
// bbolt's MaxSize is the hard stop: a commit that would grow the file past it
// fails with ErrMaxSizeReached and changes nothing. The store does not rely on
// hitting it. It keeps its own count of the bytes its records occupy (the
// "used" bytes, with page rounding and bbolt element headers) and admits a
// chunk only while used stays within a budget below MaxBytes. The difference
// (the reserve) is what bbolt needs beyond the records themselves:
//
//	reserve = 32 pages                 meta pages, bucket roots and branches, and the
//	                                   copy-on-write copies of the pages one commit touches
//	        + AllocSize + 1 page       bbolt grows the file in AllocSize steps and refuses
//	                                   a step that would cross MaxSize, so the last step
//	                                   is never usable
//	        + max(MaxBytes/16,         fragmentation: a segment needs 16 contiguous pages,
//	              8 segments)          small pages scattered between free runs can make a
//	                                   run too short, and pages freed by a commit are
//	                                   reusable only by a later commit
//	        + 2 × free-list pages      only with Options.SyncFreelist: bbolt writes the list
//	                                   of free page ids (8 bytes each) on every commit to
//	                                   fresh pages while the old copy is still pending
//
// Records smaller than a page (chunk metadata, offsets, losses) are counted
// four times over: bbolt merges leaf pages only once they fall below a quarter
// full, so a quarter is the worst steady fill.
//
// TestFileSizeBoundedUnderChurn measures the result; the numbers are in the
// package documentation.

const (
	pageSize          = 4096 // bbolt page size of files this package creates
	pageHeaderSize    = 16   // bbolt page header
	leafElemSize      = 16   // bbolt leaf element header
	bucketHeaderSize  = 16   // bbolt bucket header (root page id and sequence)
	smallFactor       = 4    // worst leaf fill of small records is 1/4
	fixedReservePages = 32
	fragDivisor       = 16

	fragMinSegments = 8
	minAllocSize    = 64 << 10
	maxAllocSize    = 16 << 20
	maxMetaEstimate = 4096    // chunk metadata assumed by MaxFrameBytes
	maxFrameCap     = 1 << 30 // MaxFrameBytes never exceeds this (lengths are stored as 31-bit values)
	frameKeyLen     = 1       // key of a segment inside its bucket
)

// layout is the size arithmetic of one store.
type layout struct {
	pageSize  int64
	maxBytes  int64
	allocSize int   // bbolt DB.AllocSize
	reserve   int64 // MaxBytes - budget
	budget    int64 // bytes of records the store admits
	maxChunk  int64 // largest accounted cost of one chunk: the budget
	maxFrame  int   // largest frame with maxMetaEstimate bytes of metadata
}

func newLayout(maxBytes int64, psize int, syncFreelist bool) (layout, error) {
	l := layout{pageSize: int64(psize), maxBytes: maxBytes}
	a := int64(minAllocSize)
	for a*2 <= maxBytes/64 && a < maxAllocSize {
		a *= 2
	}
	l.allocSize = int(a)
	l.reserve = fixedReservePages*l.pageSize + a + l.pageSize + max(maxBytes/fragDivisor, fragMinSegments*segmentPages*l.pageSize)
	if syncFreelist {
		ids := maxBytes / l.pageSize
		l.reserve += 2 * ((ids*8+l.pageSize-1)/l.pageSize + 1) * l.pageSize
	}
	l.budget = maxBytes - l.reserve
	if l.budget < 4*l.frameCost(int(l.pageSize)) {
		return layout{}, fmt.Errorf("MaxBytes %d leaves a budget of %d bytes: %w", maxBytes, l.budget, ErrInvalid)
	}
	// A chunk that fits the budget fits an empty store: frames are stored
	// in 64 KiB segments, so they need no contiguous room beyond that.
	l.maxChunk = l.budget
	avail := l.maxChunk - l.smallCost(8, maxMetaEstimate)
	full := l.segmentCost(segmentSize)
	n := (avail / full) * segmentSize
	if rest := avail % full; rest > l.segmentCost(l.pageSize) {
		n += (rest-l.smallCost(segKeyLen, bucketHeaderSize))/l.pageSize*l.pageSize - pageHeaderSize - leafElemSize - frameKeyLen
	}
	l.maxFrame = int(min(n, maxFrameCap))
	return l, nil
}

// smallCost is the accounted size of a record smaller than a page.
func (l layout) smallCost(keyLen, valLen int) int64 {
	return smallFactor * int64(leafElemSize+keyLen+valLen)
}

// segmentCost is the accounted size of one frame segment of m bytes (see
// frames.go): a nested bucket, inline in its parent's leaf when small
// enough, else whole pages.
func (l layout) segmentCost(m int64) int64 {
	inner := pageHeaderSize + leafElemSize + frameKeyLen + m
	if inner <= l.pageSize/4 {
		return l.smallCost(segKeyLen, bucketHeaderSize+int(inner))
	}
	pages := (inner + l.pageSize - 1) / l.pageSize
	return pages*l.pageSize + l.smallCost(segKeyLen, bucketHeaderSize)
}

// frameCost is the accounted size of a frame of n bytes.
func (l layout) frameCost(n int) int64 {
	k := int64(segments(n))
	return (k-1)*l.segmentCost(segmentSize) + l.segmentCost(int64(n)-(k-1)*segmentSize)
}

// chunkCost is the accounted size of a chunk: its frame and its metadata.
func (l layout) chunkCost(frameLen, metaLen int) int64 {
	return l.frameCost(frameLen) + l.smallCost(8, metaLen)
}
