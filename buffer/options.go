package buffer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Policy says what Append does when the buffer is full.
type Policy int

const (
	// PolicyBlock makes Append wait until Ack, Reject or DropBefore frees
	// room. Nothing is lost; the agent stops reading and the edge cluster's
	// retention becomes the buffer.
	PolicyBlock Policy = iota
	// PolicyDropOldest makes Append delete the oldest chunks that were never
	// handed to the shipper, and record their ranges as losses.
	PolicyDropOldest
)

// ParsePolicy parses the flag spelling of a Policy: "block" or "drop-oldest".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "block":
		return PolicyBlock, nil
	case "drop-oldest":
		return PolicyDropOldest, nil
	}
	return 0, fmt.Errorf("parse buffer policy %q: want \"block\" or \"drop-oldest\": %w", s, ErrInvalid)
}

// String returns the flag spelling of p.
func (p Policy) String() string {
	switch p {
	case PolicyBlock:
		return "block"
	case PolicyDropOldest:
		return "drop-oldest"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

const (
	// MinMaxBytes is the smallest accepted Options.MaxBytes. The reserve
	// bbolt needs beyond the records (meta pages, bucket roots, one growth
	// step and at least 512 KiB of fragmentation slack; see the package
	// documentation) is about 700 KiB at this size, so the budget is 82.7%
	// of MaxBytes; at 1 MiB it would be a third.
	MinMaxBytes = 4 << 20

	// DefaultLockTimeout is used when Options.LockTimeout is 0.
	DefaultLockTimeout = time.Second

	// FileName is the name of the bbolt file inside the buffer directory.
	FileName = "buffer.db"

	// MaxReasonLen bounds Loss.Reason and the reason given to Reject.
	MaxReasonLen = 256
)

// Options configure Open. The zero value is not valid: MaxBytes is required.
type Options struct {
	// MaxBytes is a hard cap on the size of the bbolt file on disk (not only
	// the payload). It must be at least MinMaxBytes. Part of it is reserved
	// for bbolt's own pages and for fragmentation; see Stats.BudgetBytes.
	MaxBytes int64

	// Policy applies when a chunk does not fit. Default PolicyBlock.
	Policy Policy

	// Logger receives warnings about full buffers and losses. nil discards.
	Logger *slog.Logger

	// Registerer registers the edgemirror_buffer_* metrics. nil registers
	// nothing. Close unregisters them, so a Store can be reopened on the
	// same registry.
	Registerer prometheus.Registerer

	// LockTimeout bounds the wait for the file lock. 0 means
	// DefaultLockTimeout; a second agent on the same directory then fails
	// with ErrLocked after about a second instead of hanging.
	LockTimeout time.Duration

	// SyncFreelist makes bbolt persist its free-page list on every commit
	// (bbolt NoFreelistSync=false). The default (false) rebuilds the list
	// from the committed tree on Open instead, as etcd does. Both are crash
	// safe; see the "Free-page list" caveat in the package documentation for
	// the measured trade-off.
	SyncFreelist bool
}

func (o *Options) validate() error {
	if o.MaxBytes < MinMaxBytes {
		return fmt.Errorf("MaxBytes %d is below the minimum %d: %w", o.MaxBytes, MinMaxBytes, ErrInvalid)
	}
	if o.Policy != PolicyBlock && o.Policy != PolicyDropOldest {
		return fmt.Errorf("policy %v: %w", o.Policy, ErrInvalid)
	}
	if o.LockTimeout < 0 {
		return fmt.Errorf("LockTimeout %v is negative: %w", o.LockTimeout, ErrInvalid)
	}
	return nil
}

// MaxFrameBytes is the largest frame a Store opened with these options
// accepts, so a configuration can be checked before the store is opened
// (see Store.MaxFrameBytes). It is 0 for invalid options.
func (o Options) MaxFrameBytes() int {
	if o.validate() != nil {
		return 0
	}
	l, err := newLayout(o.MaxBytes, pageSize, o.SyncFreelist)
	if err != nil {
		return 0
	}
	return l.maxFrame
}
