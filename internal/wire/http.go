package wire

import (
	"math"
	"time"
)

// HTTP protocol between agent and aggregator. docs/protocol.md describes the
// exchange, the status codes and who retries what.

// Paths served by the aggregator.
const (
	// PathChunks accepts POST with one frame as the body and Content-Type
	// ContentTypeChunk. The answer is ChunkResponse (200) or ErrorResponse.
	PathChunks = "/v1/chunks"
	// PathLosses accepts POST with a JSON LossReport as the body.
	PathLosses = "/v1/losses"
	// PathResume answers GET with ResumeResponse for the calling edge and
	// the epoch in HeaderEpoch.
	PathResume = "/v1/resume"
	// PathWatermark answers GET ?topic=T&partition=P&log_end=N with
	// WatermarkResponse: the highest source offset of the calling edge's
	// partition T/P that the hub holds. log_end is the edge partition's
	// end offset (last stable offset); the aggregator logs and counts a
	// partition that ends at or below the watermark (a new incarnation).
	PathWatermark = "/v1/watermark"
)

// Request headers sent by the agent.
const (
	// HeaderEdge carries the edge id. The aggregator trusts it only when it
	// runs without authentication; otherwise the id comes from the
	// credential and a differing HeaderEdge is rejected.
	HeaderEdge = "Edgemirror-Edge"
	// HeaderEpoch carries a decimal uint64 naming the agent's buffer.
	// Sequence numbers restart with a new epoch (a new, empty buffer).
	HeaderEpoch = "Edgemirror-Epoch"
	// HeaderFloor carries a decimal uint64: the lowest seq the agent still
	// holds. Every lower seq was acknowledged or dropped, so the aggregator
	// must not wait for it.
	HeaderFloor = "Edgemirror-Floor"
)

// ContentTypeChunk is the Content-Type of a PathChunks request body.
const ContentTypeChunk = "application/vnd.edgemirror.chunk"

// ContentTypeJSON is the Content-Type of every JSON body of the protocol.
const ContentTypeJSON = "application/json"

// MaxJSONBytes bounds every JSON body of the protocol (LossReport,
// ResumeResponse, ChunkResponse, ErrorResponse). A receiver reads at most
// this many bytes and rejects a larger LossReport with 413; a sender splits
// larger loss reports.
const MaxJSONBytes = 1 << 20

// ChunkResponse answers a successful PathChunks request. It is sent only
// after the hub acknowledged every record of the chunk (acks=all).
//
// The agent deletes a chunk only on a 200 whose ChunkResponse names the
// chunk's seq and record count: any other 2xx (a misrouted path, a proxy) is
// no proof that the hub has the records, and is retried.
type ChunkResponse struct {
	Seq        uint64 `json:"seq"`        // the frame's seq
	Records    int    `json:"records"`    // the frame's record count
	Written    int    `json:"written"`    // records produced to the hub by this request
	Duplicates int    `json:"duplicates"` // records skipped because the hub already had them
	// Refused are records of the chunk that the hub refused for good (too
	// large, a timestamp it does not accept): they are not in the hub, the
	// aggregator recorded them as lost, and the rest of the chunk was
	// written.
	Refused []LossRange `json:"refused,omitempty"`
}

// LossRange is a contiguous run of offsets of one source partition that the
// agent will never deliver.
type LossRange struct {
	Topic       string `json:"topic"`
	Partition   int32  `json:"partition"`
	FirstOffset int64  `json:"first_offset"` // inclusive
	LastOffset  int64  `json:"last_offset"`  // inclusive
	Records     int64  `json:"records"`      // records lost in the range; may be below the offset span (compaction, transactions)
	Reason      string `json:"reason"`       // one of the LossReason constants
}

// LossReport is the body of a PathLosses request.
type LossReport struct {
	Ranges []LossRange `json:"ranges"`
}

// ResumeResponse answers PathResume.
type ResumeResponse struct {
	Epoch   uint64 `json:"epoch"`    // the epoch the aggregator accepts chunks of
	NextSeq uint64 `json:"next_seq"` // seq the aggregator expects next; 0 = unknown or another epoch
	// MaxSeq is the highest seq of the asked epoch this aggregator has seen:
	// applied, or received and waiting for its turn (0 = none). A buffer
	// whose next seq is at or below it was rolled back: its next chunks
	// would reuse numbers the aggregator knows with other content.
	MaxSeq uint64 `json:"max_seq,omitempty"`
}

// WatermarkResponse answers PathWatermark.
type WatermarkResponse struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"` // highest source offset in the hub; -1: none
}

// ErrorResponse is the JSON body of every non-2xx answer.
type ErrorResponse struct {
	Error     string `json:"error"`
	Permanent bool   `json:"permanent"` // true: retrying the same request cannot succeed
	// Code names the condition when the agent must act on it (one of the
	// Code constants); empty otherwise.
	Code string `json:"code,omitempty"`
}

// Codes of an ErrorResponse.
const (
	// CodeEpochReplaced (409): the request's epoch was replaced by a newer
	// buffer epoch of the same edge; chunks of it are refused from now on.
	CodeEpochReplaced = "epoch-replaced"
	// CodeSeqReused (409): the chunk's seq was applied before with other
	// content; the sender's buffer was rolled back and must renew its epoch.
	CodeSeqReused = "seq-reused"
)

// Reasons of a LossRange: the one list of every reason an agent reports
// (docs/protocol.md, section 3.3, lists them for other implementations).
const (
	// LossReasonDropOldest: the buffer was full under
	// --buffer-full=drop-oldest and the oldest chunks were dropped.
	LossReasonDropOldest = "buffer-full-drop-oldest"
	// LossReasonEdgeRetention: edge Kafka deleted records the agent had not
	// read yet (the next offset fell below the log start offset).
	LossReasonEdgeRetention = "edge-retention"
	// LossReasonRejected: the aggregator rejected the chunk permanently
	// (400, 413 or 422) and the agent quarantined it.
	LossReasonRejected = "rejected-by-aggregator"
	// LossReasonRefusedByHub: the hub refused single records for good
	// (MESSAGE_TOO_LARGE, INVALID_TIMESTAMP, ...); the rest of their chunk
	// was written.
	LossReasonRefusedByHub = "refused-by-hub"
	// LossReasonBufferCorrupt: a chunk stored in the agent's buffer no
	// longer matched its checksum and was dropped instead of shipped.
	LossReasonBufferCorrupt = "buffer-corrupt"
	// LossReasonTooLarge: the records were too large for the agent's
	// buffer (a chunk larger than it can ever hold).
	LossReasonTooLarge = "too-large-for-buffer"
	// LossReasonProvenance: the record already carried edgemirror
	// provenance headers (it was mirrored from elsewhere); shipping it again
	// could build a mirroring cycle.
	LossReasonProvenance = "provenance"
	// LossReasonTimestamp: the record's timestamp is outside MinTimestamp..
	// MaxTimestamp and cannot be written to Kafka without wrapping.
	LossReasonTimestamp = "timestamp-out-of-range"
	// LossReasonStranded: the records are held by a buffer whose epoch was
	// replaced (another buffer took over the edge id); the aggregator
	// refuses them. They reach the hub only if the operator renews that
	// buffer's epoch (edgemirror buffer renew-epoch, see README).
	LossReasonStranded = "stranded-epoch"
	// LossReasonSourceIncarnation: the edge partition is a new incarnation
	// (topic recreated, edge cluster rebuilt) whose offsets the hub already
	// holds from the old one; these offsets of the new one are not mirrored.
	LossReasonSourceIncarnation = "source-incarnation"
)

// Record timestamps a hub write can carry exactly, in Unix milliseconds.
// kafka-go encodes a timestamp through time.Time.UnixNano, which wraps
// outside the years 1678 to 2262; a timestamp outside this range (typically
// microseconds sent as milliseconds) is refused, never written wrapped.
// -1 (no timestamp) is inside it.
const (
	MinTimestamp = math.MinInt64 / int64(time.Millisecond/time.Nanosecond)
	MaxTimestamp = math.MaxInt64 / int64(time.Millisecond/time.Nanosecond)
)

// ValidTimestamp reports whether ms (Unix milliseconds) can be written to
// Kafka exactly, see MaxTimestamp.
func ValidTimestamp(ms int64) bool { return ms >= MinTimestamp && ms <= MaxTimestamp }
