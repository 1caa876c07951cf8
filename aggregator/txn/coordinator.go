package txn

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/addoffsetstotxn"
	"github.com/segmentio/kafka-go/protocol/addpartitionstotxn"
	"github.com/segmentio/kafka-go/protocol/endtxn"
	"github.com/segmentio/kafka-go/protocol/txnoffsetcommit"
)

// kafka-go's Client sends a FindCoordinator before every transactional or
// group request. The four a transaction sends, AddPartitionsToTxn,
// AddOffsetsToTxn and EndTxn to the transaction coordinator and
// TxnOffsetCommit to the group coordinator, are sent here straight to the
// coordinator the producer found last: request types of their own, encoded
// like kafka-go's (the same fields and version tags, registered as
// overrides of the same API) but routed to a given broker.
const (
	addPartitionsAtKey protocol.OverrideTypeKey = 0x4531 + iota
	endTxnAtKey
	addOffsetsAtKey
	txnOffsetCommitAtKey
)

func init() {
	protocol.RegisterOverride(&addPartitionsAt{}, &addpartitionstotxn.Response{}, addPartitionsAtKey)
	protocol.RegisterOverride(&endTxnAt{}, &endtxn.Response{}, endTxnAtKey)
	protocol.RegisterOverride(&addOffsetsAt{}, &addoffsetstotxn.Response{}, addOffsetsAtKey)
	protocol.RegisterOverride(&txnOffsetCommitAt{}, &txnoffsetcommit.Response{}, txnOffsetCommitAtKey)
}

// addPartitionsAt is addpartitionstotxn.Request sent to one broker.
type addPartitionsAt struct {
	_ struct{} `kafka:"min=v3,max=v3,tag"`

	TransactionalID string                            `kafka:"min=v0,max=v2|min=v3,max=v3,compact"`
	ProducerID      int64                             `kafka:"min=v0,max=v3"`
	ProducerEpoch   int16                             `kafka:"min=v0,max=v3"`
	Topics          []addpartitionstotxn.RequestTopic `kafka:"min=v0,max=v3"`

	coordinator int32
}

func (r *addPartitionsAt) ApiKey() protocol.ApiKey           { return protocol.AddPartitionsToTxn }
func (r *addPartitionsAt) TypeKey() protocol.OverrideTypeKey { return addPartitionsAtKey }
func (r *addPartitionsAt) Broker(c protocol.Cluster) (protocol.Broker, error) {
	return brokerOf(c, r.coordinator)
}

// endTxnAt is endtxn.Request sent to one broker.
type endTxnAt struct {
	_ struct{} `kafka:"min=v3,max=v3,tag"`

	TransactionalID string `kafka:"min=v0,max=v2|min=v3,max=v3,compact"`
	ProducerID      int64  `kafka:"min=v0,max=v3"`
	ProducerEpoch   int16  `kafka:"min=v0,max=v3"`
	Committed       bool   `kafka:"min=v0,max=v3"`

	coordinator int32
}

func (r *endTxnAt) ApiKey() protocol.ApiKey           { return protocol.EndTxn }
func (r *endTxnAt) TypeKey() protocol.OverrideTypeKey { return endTxnAtKey }
func (r *endTxnAt) Broker(c protocol.Cluster) (protocol.Broker, error) {
	return brokerOf(c, r.coordinator)
}

// addOffsetsAt is addoffsetstotxn.Request sent to one broker.
type addOffsetsAt struct {
	_ struct{} `kafka:"min=v3,max=v3,tag"`

	TransactionalID string `kafka:"min=v0,max=v2|min=v3,max=v3,compact"`
	ProducerID      int64  `kafka:"min=v0,max=v3"`
	ProducerEpoch   int16  `kafka:"min=v0,max=v3"`
	GroupID         string `kafka:"min=v0,max=v3|min=v3,max=v3,compact"`

	coordinator int32
}

func (r *addOffsetsAt) ApiKey() protocol.ApiKey           { return protocol.AddOffsetsToTxn }
func (r *addOffsetsAt) TypeKey() protocol.OverrideTypeKey { return addOffsetsAtKey }
func (r *addOffsetsAt) Broker(c protocol.Cluster) (protocol.Broker, error) {
	return brokerOf(c, r.coordinator)
}

// txnOffsetCommitAt is txnoffsetcommit.Request sent to one broker.
type txnOffsetCommitAt struct {
	_ struct{} `kafka:"min=v3,max=v3,tag"`

	TransactionalID string                         `kafka:"min=v0,max=v2|min=v3,max=v3,compact"`
	GroupID         string                         `kafka:"min=v0,max=v2|min=v3,max=v3,compact"`
	ProducerID      int64                          `kafka:"min=v0,max=v3"`
	ProducerEpoch   int16                          `kafka:"min=v0,max=v3"`
	GenerationID    int32                          `kafka:"min=v3,max=v3"`
	MemberID        string                         `kafka:"min=v3,max=v3,compact"`
	GroupInstanceID string                         `kafka:"min=v3,max=v3,compact,nullable"`
	Topics          []txnoffsetcommit.RequestTopic `kafka:"min=v0,max=v3"`

	coordinator int32
}

func (r *txnOffsetCommitAt) ApiKey() protocol.ApiKey           { return protocol.TxnOffsetCommit }
func (r *txnOffsetCommitAt) TypeKey() protocol.OverrideTypeKey { return txnOffsetCommitAtKey }
func (r *txnOffsetCommitAt) Broker(c protocol.Cluster) (protocol.Broker, error) {
	return brokerOf(c, r.coordinator)
}

var (
	_ protocol.BrokerMessage = (*addPartitionsAt)(nil)
	_ protocol.BrokerMessage = (*endTxnAt)(nil)
	_ protocol.BrokerMessage = (*addOffsetsAt)(nil)
	_ protocol.BrokerMessage = (*txnOffsetCommitAt)(nil)
)

// errCoordinatorGone: the cached coordinator is not in the client's
// metadata (any more).
var errCoordinatorGone = errors.New("coordinator not in the cluster metadata")

func brokerOf(c protocol.Cluster, id int32) (protocol.Broker, error) {
	b, ok := c.Brokers[id]
	if !ok {
		return protocol.Broker{ID: -1}, fmt.Errorf("%w: broker %d", errCoordinatorGone, id)
	}
	return b, nil
}

// coordinatorErrors mean the coordinator is elsewhere or not ready: look
// it up again before the retry.
var coordinatorErrors = []error{kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable}

// coordKey names a coordinator: of the transactional id, or of a consumer
// group.
type coordKey struct {
	typ kafka.CoordinatorKeyType
	key string
}

func (p *Producer) txnCoordinator() coordKey {
	return coordKey{typ: kafka.CoordinatorKeyTypeTransaction, key: p.cfg.TransactionalID}
}

func groupCoordinator(group string) coordKey {
	return coordKey{typ: kafka.CoordinatorKeyTypeConsumer, key: group}
}

// coordinator returns the broker id of the coordinator for k, looked up
// once and kept until a request to it fails.
func (p *Producer) coordinator(ctx context.Context, k coordKey) (int32, error) {
	p.mu.Lock()
	id, known := p.coords[k]
	p.mu.Unlock()
	if known {
		return id, nil
	}
	res, err := p.cfg.Client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: k.key, KeyType: k.typ})
	if err != nil {
		return 0, err
	}
	if res.Error != nil {
		return 0, res.Error
	}
	if res.Coordinator == nil {
		return 0, errors.New("find coordinator: no coordinator in the answer")
	}
	id = int32(res.Coordinator.NodeID)
	p.mu.Lock()
	p.coords[k] = id
	p.mu.Unlock()
	return id, nil
}

// toCoordinator sends a request built for the coordinator for k and
// returns its answer; after an answer or a failure that says the
// coordinator may have moved, the next call looks it up again.
func (p *Producer) toCoordinator(ctx context.Context, k coordKey, build func(coordinator int32) protocol.Message,
	answer func(protocol.Message) error) error {
	id, err := p.coordinator(ctx, k)
	if err != nil {
		return err
	}
	m, err := p.roundTrip(ctx, build(id))
	if err == nil {
		err = answer(m)
	}
	var ke kafka.Error
	if err != nil && (!errors.As(err, &ke) || isAny(err, coordinatorErrors)) {
		p.mu.Lock()
		delete(p.coords, k)
		p.mu.Unlock()
	}
	return err
}

// addPartitions sends AddPartitionsToTxn for one topic to the coordinator.
func (p *Producer) addPartitions(ctx context.Context, pid int64, epoch int16, topic string, parts []int32) error {
	return p.toCoordinator(ctx, p.txnCoordinator(), func(id int32) protocol.Message {
		return &addPartitionsAt{TransactionalID: p.cfg.TransactionalID, ProducerID: pid, ProducerEpoch: epoch,
			Topics: []addpartitionstotxn.RequestTopic{{Name: topic, Partitions: parts}}, coordinator: id}
	}, func(m protocol.Message) error {
		res, ok := m.(*addpartitionstotxn.Response)
		if !ok {
			return fmt.Errorf("add partitions: unexpected answer %T", m)
		}
		answered := 0
		for _, t := range res.Results {
			for _, pr := range t.Results {
				if pr.ErrorCode != 0 {
					return kafka.Error(pr.ErrorCode)
				}
				answered++
			}
		}
		if answered != len(parts) {
			return fmt.Errorf("add partitions: %d of %d partitions answered", answered, len(parts))
		}
		return nil
	})
}

// endTxn sends EndTxn to the coordinator.
func (p *Producer) endTxn(ctx context.Context, pid int64, epoch int16, commit bool) error {
	return p.toCoordinator(ctx, p.txnCoordinator(), func(id int32) protocol.Message {
		return &endTxnAt{TransactionalID: p.cfg.TransactionalID, ProducerID: pid, ProducerEpoch: epoch,
			Committed: commit, coordinator: id}
	}, func(m protocol.Message) error {
		res, ok := m.(*endtxn.Response)
		if !ok {
			return fmt.Errorf("end transaction: unexpected answer %T", m)
		}
		if res.ErrorCode != 0 {
			return kafka.Error(res.ErrorCode)
		}
		return nil
	})
}

// addOffsets sends AddOffsetsToTxn for a consumer group to the
// transaction coordinator.
func (p *Producer) addOffsets(ctx context.Context, pid int64, epoch int16, group string) error {
	return p.toCoordinator(ctx, p.txnCoordinator(), func(id int32) protocol.Message {
		return &addOffsetsAt{TransactionalID: p.cfg.TransactionalID, ProducerID: pid, ProducerEpoch: epoch,
			GroupID: group, coordinator: id}
	}, func(m protocol.Message) error {
		res, ok := m.(*addoffsetstotxn.Response)
		if !ok {
			return fmt.Errorf("add offsets: unexpected answer %T", m)
		}
		if res.ErrorCode != 0 {
			return kafka.Error(res.ErrorCode)
		}
		return nil
	})
}

// txnOffsetCommit sends TxnOffsetCommit to the group's coordinator. The
// group needs no members (generation -1).
func (p *Producer) txnOffsetCommit(ctx context.Context, pid int64, epoch int16, group string,
	offsets map[string][]kafka.TxnOffsetCommit) error {
	topics := make([]txnoffsetcommit.RequestTopic, 0, len(offsets))
	want := make(map[tp]bool)
	for topic, parts := range offsets {
		t := txnoffsetcommit.RequestTopic{Name: topic, Partitions: make([]txnoffsetcommit.RequestPartition, len(parts))}
		for i, o := range parts {
			t.Partitions[i] = txnoffsetcommit.RequestPartition{Partition: int32(o.Partition), CommittedOffset: o.Offset,
				CommittedLeaderEpoch: -1, CommittedMetadata: o.Metadata}
			want[tp{topic, int32(o.Partition)}] = true
		}
		topics = append(topics, t)
	}
	return p.toCoordinator(ctx, groupCoordinator(group), func(id int32) protocol.Message {
		return &txnOffsetCommitAt{TransactionalID: p.cfg.TransactionalID, GroupID: group, ProducerID: pid,
			ProducerEpoch: epoch, GenerationID: -1, Topics: topics, coordinator: id}
	}, func(m protocol.Message) error {
		res, ok := m.(*txnoffsetcommit.Response)
		if !ok {
			return fmt.Errorf("commit offsets: unexpected answer %T", m)
		}
		answered := make(map[tp]bool, len(want))
		for _, t := range res.Topics {
			for _, pr := range t.Partitions {
				if pr.ErrorCode != 0 {
					return kafka.Error(pr.ErrorCode)
				}
				answered[tp{t.Name, pr.Partition}] = true
			}
		}
		for k := range want {
			if !answered[k] {
				return fmt.Errorf("commit offsets: no answer for %s/%d", k.topic, k.partition)
			}
		}
		return nil
	})
}
