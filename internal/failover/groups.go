package failover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/describegroups"
)

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// ErrGroupActive is returned when a group's offsets would be changed while
// it has active members.
var ErrGroupActive = errors.New("consumer group has active members")

// coordinatorWait bounds how long a group request waits for the group
// coordinator to become available.
const coordinatorWait = 30 * time.Second

// retryable reports whether a group request failed because the group
// coordinator is not ready: a cluster that never had a group creates its
// offsets topic on the first request (kafka-go ignores the error of its own
// FindCoordinator, so the request lands on a broker that is not the
// coordinator), or a coordinator is loading or moving.
func retryable(err error) bool {
	return errors.Is(err, kafka.NotCoordinatorForGroup) || errors.Is(err, kafka.GroupCoordinatorNotAvailable) ||
		errors.Is(err, kafka.GroupLoadInProgress)
}

// withCoordinator calls fn until it succeeds, fails with an error that is
// not retryable, or coordinatorWait passed.
func withCoordinator(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(coordinatorWait)
	wait := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !retryable(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ListGroups returns the ids of every consumer group of a cluster.
func ListGroups(ctx context.Context, cl *kafka.Client) ([]string, error) {
	res, err := cl.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	if res.Error != nil {
		return nil, fmt.Errorf("list groups: %w", res.Error)
	}
	out := make([]string, 0, len(res.Groups))
	for _, g := range res.Groups {
		out = append(out, g.GroupID)
	}
	sort.Strings(out)
	return out, nil
}

// GroupOffsets returns a group's committed offsets on every partition it
// committed one for. A group that never committed has none.
func GroupOffsets(ctx context.Context, cl *kafka.Client, group string) (out map[TopicPartition]int64, err error) {
	err = withCoordinator(ctx, func() error {
		out, err = groupOffsets(ctx, cl, group)
		return err
	})
	return out, err
}

func groupOffsets(ctx context.Context, cl *kafka.Client, group string) (map[TopicPartition]int64, error) {
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group})
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	out := make(map[TopicPartition]int64)
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		return out, nil // some brokers answer so for a group that never committed
	}
	if res.Error != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, res.Error)
	}
	for topic, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return nil, fmt.Errorf("fetch offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
			}
			if p.CommittedOffset < 0 {
				continue // nothing committed
			}
			out[TopicPartition{Topic: topic, Partition: int32(p.Partition)}] = p.CommittedOffset
		}
	}
	return out, nil
}

// GroupInfo is a group's state as the coordinator reports it.
type GroupInfo struct {
	State   string // Empty, Dead, Stable, PreparingRebalance, ...; "" when unknown to the cluster
	Members int
}

// Active reports whether the group has members that consume.
func (g GroupInfo) Active() bool {
	return g.Members > 0 || (g.State != "" && g.State != "Empty" && g.State != "Dead")
}

// GroupState describes a group. The raw DescribeGroups answer is used, so
// that member metadata of any consumer protocol version is not decoded.
func GroupState(ctx context.Context, cl *kafka.Client, group string) (info GroupInfo, err error) {
	err = withCoordinator(ctx, func() error {
		info, err = groupState(ctx, cl, group)
		return err
	})
	return info, err
}

func groupState(ctx context.Context, cl *kafka.Client, group string) (GroupInfo, error) {
	tr := cl.Transport
	if tr == nil {
		tr = kafka.DefaultTransport
	}
	if cl.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cl.Timeout)
		defer cancel()
	}
	msg, err := tr.RoundTrip(ctx, cl.Addr, &describegroups.Request{Groups: []string{group}})
	if err != nil {
		return GroupInfo{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	res, ok := msg.(*describegroups.Response)
	if !ok {
		return GroupInfo{}, fmt.Errorf("describe group %s: unexpected answer %T", group, msg)
	}
	for _, g := range res.Groups {
		if g.GroupID != group {
			continue
		}
		if g.ErrorCode != 0 {
			if kafka.Error(g.ErrorCode) == kafka.GroupIdNotFound {
				return GroupInfo{}, nil
			}
			return GroupInfo{}, fmt.Errorf("describe group %s: %w", group, kafka.Error(g.ErrorCode))
		}
		return GroupInfo{State: g.GroupState, Members: len(g.Members)}, nil
	}
	return GroupInfo{}, fmt.Errorf("describe group %s: group missing from the answer", group)
}

// Commit commits offsets for group without joining it (generation -1, no
// member id), after checking that the group has no active members; the
// broker refuses such a commit for a group that gained members since.
func Commit(ctx context.Context, cl *kafka.Client, group string, offsets map[TopicPartition]int64) error {
	info, err := GroupState(ctx, cl, group)
	if err != nil {
		return err
	}
	if info.Active() {
		return fmt.Errorf("commit offsets of group %s (state %s, %d members): %w", group, info.State, info.Members, ErrGroupActive)
	}
	req := &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: make(map[string][]kafka.OffsetCommit)}
	for tp, off := range offsets {
		req.Topics[tp.Topic] = append(req.Topics[tp.Topic], kafka.OffsetCommit{Partition: int(tp.Partition), Offset: off})
	}
	var res *kafka.OffsetCommitResponse
	err = withCoordinator(ctx, func() error {
		res, err = cl.OffsetCommit(ctx, req)
		if err != nil {
			return err
		}
		for _, ps := range res.Topics {
			for _, p := range ps {
				if retryable(p.Error) {
					return p.Error
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	for topic, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				if errors.Is(p.Error, kafka.UnknownMemberId) || errors.Is(p.Error, kafka.IllegalGeneration) ||
					errors.Is(p.Error, kafka.RebalanceInProgress) {
					return fmt.Errorf("commit offset of group %s on %s/%d: %w (%w)", group, topic, p.Partition, ErrGroupActive, p.Error)
				}
				return fmt.Errorf("commit offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
			}
		}
	}
	return nil
}
