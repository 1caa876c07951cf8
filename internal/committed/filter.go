package committed

import (
	"sort"

	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// AbortFilter decides, batch by batch in offset order, which transactional
// batches of one partition's fetch response belong to aborted transactions:
// the Java consumer's algorithm, for readers that parse fetch responses
// themselves. A producer is aborted from the first offset of an aborted
// transaction the response lists until that transaction's ABORT marker.
// The list is taken in up to every batch, markers included: a fetch that
// starts at an ABORT marker lists that transaction, and the marker must end
// it, or the producer's next (committed) transaction would be dropped.
type AbortFilter struct {
	aborted []fetchapi.ResponseTransaction
	next    int
	pids    map[int64]bool
}

// NewAbortFilter returns the filter of one partition's response.
func NewAbortFilter(list []fetchapi.ResponseTransaction) *AbortFilter {
	aborted := append([]fetchapi.ResponseTransaction(nil), list...)
	sort.Slice(aborted, func(i, j int) bool { return aborted[i].FirstOffset < aborted[j].FirstOffset })
	return &AbortFilter{aborted: aborted, pids: make(map[int64]bool)}
}

func (f *AbortFilter) takeIn(baseOffset int64) {
	for f.next < len(f.aborted) && f.aborted[f.next].FirstOffset <= baseOffset {
		f.pids[f.aborted[f.next].ProducerID] = true
		f.next++
	}
}

// Marker is called for each control batch; abort is whether its record is
// an ABORT marker.
func (f *AbortFilter) Marker(producerID, baseOffset int64, abort bool) {
	f.takeIn(baseOffset)
	if abort {
		delete(f.pids, producerID)
	}
}

// Skip reports whether a data batch belongs to an aborted transaction.
func (f *AbortFilter) Skip(producerID, baseOffset int64, transactional bool) bool {
	if !transactional {
		return false
	}
	f.takeIn(baseOffset)
	return f.pids[producerID]
}
