package txn

import (
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// Kind classifies what an error means for the records involved.
type Kind int

const (
	// Unavailable: the transaction failed for a reason that may pass
	// (leader moving, broker down, timeout). Nothing of it is visible;
	// Claim again and retry.
	Unavailable Kind = iota
	// Fenced: another producer claimed the transactional id. Nothing of
	// the current transaction will be committed by this producer.
	Fenced
	// Refused: the hub will never accept these records as they are
	// (too large, invalid timestamp, corrupt).
	Refused
)

func (k Kind) String() string {
	switch k {
	case Fenced:
		return "fenced"
	case Refused:
		return "refused"
	default:
		return "unavailable"
	}
}

// Sentinels for errors.Is on an *Error.
var (
	ErrUnavailable = errors.New("hub unavailable")
	ErrFenced      = errors.New("fenced by a newer owner of the transactional id")
	ErrRefused     = errors.New("refused by the hub for good")
)

// Error is every error the Producer returns.
type Error struct {
	Kind      Kind
	Op        string // "claim", "add partitions", "produce", "commit"
	Topic     string // produce only
	Partition int32  // produce only
	// RecordErrors maps the index of a record in the refused batch to the
	// broker's reason, where the broker named single records.
	RecordErrors map[int]error
	Err          error // the broker's answer or the transport error
}

func (e *Error) Error() string {
	where := ""
	if e.Topic != "" {
		where = fmt.Sprintf(" %s/%d", e.Topic, e.Partition)
	}
	return fmt.Sprintf("%s%s: %s: %v", e.Op, where, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Is(target error) bool {
	switch target {
	case ErrFenced:
		return e.Kind == Fenced
	case ErrRefused:
		return e.Kind == Refused
	case ErrUnavailable:
		return e.Kind == Unavailable
	}
	return false
}

// fencedErrors mean another producer owns the transactional id now.
var fencedErrors = []error{kafka.InvalidProducerEpoch, kafka.ProducerFenced, kafka.TransactionCoordinatorFenced,
	kafka.InvalidProducerIDMapping}

// refusedErrors are produce answers that no retry can change.
var refusedErrors = []error{kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord,
	kafka.InvalidTimestamp, kafka.InvalidMessage, kafka.UnsupportedForMessageFormat}

// retriableErrors are answers after which the identical request may simply
// be sent again (to the same or a new leader or coordinator).
var retriableErrors = []error{kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.RequestTimedOut,
	kafka.NotEnoughReplicas, kafka.NotEnoughReplicasAfterAppend, kafka.NetworkException, kafka.KafkaStorageError,
	kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch, kafka.BrokerNotAvailable, kafka.ReplicaNotAvailable,
	kafka.ConcurrentTransactions, kafka.GroupLoadInProgress, kafka.GroupCoordinatorNotAvailable,
	kafka.NotCoordinatorForGroup, kafka.ThrottlingQuotaExceeded, kafka.UnknownTopicOrPartition}

func isAny(err error, list []error) bool {
	for _, e := range list {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// classify turns an answer into an *Error.
func classify(op, topic string, partition int32, err error) *Error {
	k := Unavailable
	switch {
	case isAny(err, fencedErrors):
		k = Fenced
	case op == "produce" && isAny(err, refusedErrors):
		k = Refused
	}
	return &Error{Kind: k, Op: op, Topic: topic, Partition: partition, Err: err}
}

// retriable reports whether the identical request may be sent again: a
// broker answer from the list, or a transport error (no broker answer at
// all).
func retriable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return isAny(err, retriableErrors)
	}
	return true
}
