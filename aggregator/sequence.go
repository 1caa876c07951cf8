package aggregator

import (
	"fmt"
	"net/http"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Sequencing safety beyond seq order: a buffer that was rolled back
// (restored copy, VM snapshot, storage that lies about fsync) sends seqs
// again that were applied before, with other content. A chunk below next is
// applied at once as a re-send, without waiting for its predecessors; two
// such chunks with new records applied out of order would drop the earlier
// one's records as duplicates. The aggregator therefore remembers what it
// applied (appliedRing) and refuses a seq it knows with other content, and
// tells a resuming agent the highest seq it has seen (resumeAnswer), so the
// agent can move past it. Both are this process's memory: another
// aggregator, or this one after a restart, knows only its own state.

// maxRetiredEpochs bounds how many replaced epochs are remembered per edge.
// The oldest is forgotten first. A forgotten epoch that comes back is taken
// for a new buffer: it takes over the edge, and the buffer it replaces is
// refused from then on (and reports itself stranded). Nothing is lost or
// duplicated either way; the records are deduplicated by source offset.
const maxRetiredEpochs = 64

// appliedWindow is how many applied seqs per edge keep their checksum.
const appliedWindow = 4096

// appliedRing maps the most recently applied seqs of the current epoch to
// their frame checksums.
type appliedRing struct {
	sums  map[uint64]uint32
	order []uint64 // ring of seqs in sums, oldest at head
	head  int
}

func (r *appliedRing) reset() {
	clear(r.sums)
	r.order, r.head = r.order[:0], 0
}

func (r *appliedRing) add(seq uint64, sum uint32) {
	if r.sums == nil {
		r.sums = make(map[uint64]uint32)
	}
	if _, ok := r.sums[seq]; ok {
		r.sums[seq] = sum
		return
	}
	if len(r.order) < appliedWindow {
		r.order = append(r.order, seq)
	} else {
		delete(r.sums, r.order[r.head])
		r.order[r.head] = seq
		r.head = (r.head + 1) % appliedWindow
	}
	r.sums[seq] = sum
}

func (r *appliedRing) get(seq uint64) (uint32, bool) {
	sum, ok := r.sums[seq]
	return sum, ok
}

// checkReuse refuses a chunk whose seq this aggregator applied with other
// content. es.mu is held and the chunk's epoch is es.epoch.
func (es *edgeState) checkReuse(seq uint64, sum uint32) *httpError {
	old, ok := es.applied.get(seq)
	if !ok || old == sum {
		return nil
	}
	return &httpError{status: http.StatusConflict, code: wire.CodeSeqReused,
		msg: fmt.Sprintf("chunk %d of epoch %d was applied before with other content (checksum %08x, now %08x): the buffer was rolled back; renew its epoch",
			seq, es.epoch, old, sum)}
}

// retire remembers a replaced epoch, forgetting the oldest beyond
// maxRetiredEpochs. es.mu is held (or es is not shared yet).
func (es *edgeState) retire(epoch uint64) {
	if epoch == 0 || es.retired[epoch] {
		return
	}
	es.retired[epoch] = true
	es.retiredOrder = append(es.retiredOrder, epoch)
	for len(es.retiredOrder) > maxRetiredEpochs {
		delete(es.retired, es.retiredOrder[0])
		es.retiredOrder = es.retiredOrder[1:]
	}
}

// resumeAnswer is what a resuming agent of epoch learns. es.mu is held.
func (es *edgeState) resumeAnswer(epoch uint64) wire.ResumeResponse {
	res := wire.ResumeResponse{Epoch: es.epoch}
	if es.epoch != epoch || epoch == 0 {
		return res
	}
	res.NextSeq = es.next
	if es.next > 0 {
		res.MaxSeq = es.next - 1
	}
	for seq, pc := range es.pending {
		if pc.epoch == epoch && seq > res.MaxSeq {
			res.MaxSeq = seq
		}
	}
	for seq := range es.applied.sums {
		res.MaxSeq = max(res.MaxSeq, seq)
	}
	return res
}
