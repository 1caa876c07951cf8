package txn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// Config configures a Producer.
type Config struct {
	Client          *kafka.Client
	TransactionalID string
	// TransactionTimeout is how long the coordinator lets a transaction
	// stay open before it aborts it (transaction.timeout.ms). It must not
	// exceed the brokers' transaction.max.timeout.ms (15 min by default).
	TransactionTimeout time.Duration
	Compression        kafka.Compression
	// RetryFor bounds how long one call retries a retriable answer before
	// it gives up with an Unavailable error.
	RetryFor time.Duration
}

// Producer writes transactions for one transactional id.
type Producer struct {
	cfg Config

	mu      sync.Mutex
	pid     int64
	epoch   int16
	claimed bool
	seqs    map[tp]int32
	added   map[tp]bool
	groups  map[string]bool // consumer groups whose offsets are in the transaction
	dirty   bool            // something was added since the last commit
}

type tp struct {
	topic     string
	partition int32
}

// New returns a Producer. It sends nothing; call Claim first.
func New(cfg Config) (*Producer, error) {
	if cfg.Client == nil {
		return nil, errors.New("txn: no client")
	}
	if cfg.TransactionalID == "" {
		return nil, errors.New("txn: empty transactional id")
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = time.Minute
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 30 * time.Second
	}
	return &Producer{cfg: cfg, seqs: make(map[tp]int32), added: make(map[tp]bool), groups: make(map[string]bool)}, nil
}

// TransactionalID returns the id this producer writes under.
func (p *Producer) TransactionalID() string { return p.cfg.TransactionalID }

// Session returns the producer id and epoch of the current claim.
func (p *Producer) Session() (id int64, epoch int16, claimed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.epoch, p.claimed
}

// maxConcurrentWait caps the wait before retrying CONCURRENT_TRANSACTIONS.
// The coordinator answers it while the previous transaction's markers are
// being written, which takes milliseconds on a quiet hub and up to a few
// hundred on a loaded one; polling at most this far apart keeps the next
// transaction from starting much later than it could.
const maxConcurrentWait = 5 * time.Millisecond

// retryBackOff is the exponential backoff of retry, its waits capped at
// maxConcurrentWait while the last answer was CONCURRENT_TRANSACTIONS.
type retryBackOff struct {
	*backoff.ExponentialBackOff
	concurrent bool
}

func (b *retryBackOff) NextBackOff() time.Duration {
	d := b.ExponentialBackOff.NextBackOff()
	if b.concurrent && d != backoff.Stop && d > maxConcurrentWait {
		return maxConcurrentWait
	}
	return d
}

// retry calls fn until it succeeds, returns a non-retriable error, or
// RetryFor (or ctx) runs out.
func (p *Producer) retry(ctx context.Context, fn func() error) error {
	// Short first waits: the most common retry is CONCURRENT_TRANSACTIONS
	// on the first call of a transaction while the previous commit's
	// markers are still being written.
	b := &retryBackOff{ExponentialBackOff: backoff.NewExponentialBackOff()}
	b.InitialInterval = 2 * time.Millisecond
	b.RandomizationFactor = 0.2
	b.MaxInterval = time.Second
	b.MaxElapsedTime = p.cfg.RetryFor
	b.Reset()
	var last error
	err := backoff.Retry(func() error {
		err := fn()
		if err == nil {
			return nil
		}
		last = err
		b.concurrent = errors.Is(err, kafka.ConcurrentTransactions)
		if !retriable(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
	if err != nil && last != nil {
		return last
	}
	return err
}

// Claim takes the transactional id: InitProducerId fences every earlier
// owner and aborts its open transaction (and this producer's own), and
// starts a new epoch. After an error of any other call, Claim is the way
// on.
func (p *Producer) Claim(ctx context.Context) error {
	p.mu.Lock()
	p.claimed = false
	p.mu.Unlock()
	var res *kafka.InitProducerIDResponse
	err := p.retry(ctx, func() error {
		r, err := p.cfg.Client.InitProducerID(ctx, &kafka.InitProducerIDRequest{
			TransactionalID:      p.cfg.TransactionalID,
			TransactionTimeoutMs: int(p.cfg.TransactionTimeout / time.Millisecond),
			ProducerID:           -1,
			ProducerEpoch:        -1,
		})
		if err == nil && r.Error != nil {
			err = r.Error
		}
		res = r
		return err
	})
	if err != nil {
		return &Error{Kind: Unavailable, Op: "claim", Err: err}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pid, p.epoch, p.claimed = int64(res.Producer.ProducerID), int16(res.Producer.ProducerEpoch), true
	clear(p.seqs)
	clear(p.added)
	clear(p.groups)
	p.dirty = false
	return nil
}

func (p *Producer) session() (int64, int16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.claimed {
		return 0, 0, &Error{Kind: Unavailable, Op: "use", Err: errors.New("not claimed: call Claim")}
	}
	return p.pid, p.epoch, nil
}

// unclaim marks the producer unusable until the next Claim.
func (p *Producer) unclaim() {
	p.mu.Lock()
	p.claimed = false
	p.mu.Unlock()
}

// Add enters partitions into the current transaction (those already in it
// are skipped).
func (p *Producer) Add(ctx context.Context, topic string, partitions ...int32) error {
	pid, epoch, err := p.session()
	if err != nil {
		return err
	}
	var want []kafka.AddPartitionToTxn
	p.mu.Lock()
	for _, part := range partitions {
		if !p.added[tp{topic, part}] {
			want = append(want, kafka.AddPartitionToTxn{Partition: int(part)})
		}
	}
	p.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	err = p.retry(ctx, func() error {
		res, err := p.cfg.Client.AddPartitionsToTxn(ctx, &kafka.AddPartitionsToTxnRequest{
			TransactionalID: p.cfg.TransactionalID,
			ProducerID:      int(pid),
			ProducerEpoch:   int(epoch),
			Topics:          map[string][]kafka.AddPartitionToTxn{topic: want},
		})
		if err != nil {
			return err
		}
		for _, pr := range res.Topics[topic] {
			if pr.Error != nil {
				return pr.Error
			}
		}
		return nil
	})
	if err != nil {
		p.unclaim()
		return classify("add partitions", topic, -1, err)
	}
	p.mu.Lock()
	for _, w := range want {
		p.added[tp{topic, int32(w.Partition)}] = true
	}
	p.dirty = true
	p.mu.Unlock()
	return nil
}

// Produce writes recs as one batch to a partition added to the transaction
// and returns the offset of its first record. Calls for different
// partitions may run concurrently.
func (p *Producer) Produce(ctx context.Context, topic string, partition int32, recs []Record) (int64, error) {
	pid, epoch, err := p.session()
	if err != nil {
		return 0, err
	}
	key := tp{topic, partition}
	p.mu.Lock()
	in, seq := p.added[key], p.seqs[key]
	p.mu.Unlock()
	if !in {
		return 0, &Error{Kind: Unavailable, Op: "produce", Topic: topic, Partition: partition,
			Err: errors.New("partition not added to the transaction")}
	}
	batch, err := encodeBatch(batchHeader{producerID: pid, producerEpoch: epoch, baseSequence: seq,
		transactional: true, compression: p.cfg.Compression}, recs)
	if err != nil {
		return 0, &Error{Kind: Refused, Op: "produce", Topic: topic, Partition: partition, Err: err}
	}
	var res *kafka.ProduceResponse
	// The identical bytes on every attempt: if an earlier attempt was
	// appended, the leader answers it as a duplicate of its sequence.
	err = p.retry(ctx, func() error {
		r, err := p.cfg.Client.RawProduce(ctx, &kafka.RawProduceRequest{
			Topic:           topic,
			Partition:       int(partition),
			RequiredAcks:    kafka.RequireAll,
			TransactionalID: p.cfg.TransactionalID,
			RawRecords:      protocol.RawRecordSet{Reader: bytes.NewReader(batch)},
		})
		if err == nil && r.Error != nil && !errors.Is(r.Error, kafka.DuplicateSequenceNumber) {
			err = r.Error
		}
		res = r
		return err
	})
	if err != nil {
		p.unclaim()
		e := classify("produce", topic, partition, err)
		if res != nil && len(res.RecordErrors) > 0 {
			e.RecordErrors = res.RecordErrors
		}
		return 0, e
	}
	p.mu.Lock()
	p.seqs[key] = seq + int32(len(recs))
	p.mu.Unlock()
	return res.BaseOffset, nil
}

// Commit commits the current transaction. Without anything added since the
// last commit it does nothing.
func (p *Producer) Commit(ctx context.Context) error {
	pid, epoch, err := p.session()
	if err != nil {
		return err
	}
	p.mu.Lock()
	dirty := p.dirty
	p.mu.Unlock()
	if !dirty {
		return nil
	}
	// EndTxn with the same id and epoch is idempotent: a retry after a lost
	// answer finds the transaction committed and succeeds.
	err = p.retry(ctx, func() error {
		res, err := p.cfg.Client.EndTxn(ctx, &kafka.EndTxnRequest{
			TransactionalID: p.cfg.TransactionalID,
			ProducerID:      int(pid),
			ProducerEpoch:   int(epoch),
			Committed:       true,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		return err
	})
	if err != nil {
		p.unclaim()
		return classify("commit", "", -1, err)
	}
	p.mu.Lock()
	clear(p.added)
	clear(p.groups)
	p.dirty = false
	p.mu.Unlock()
	return nil
}

// addGroup enters a consumer group's offsets into the current transaction
// (AddOffsetsToTxn); a group already in it is skipped.
func (p *Producer) addGroup(ctx context.Context, group string) error {
	pid, epoch, err := p.session()
	if err != nil {
		return err
	}
	p.mu.Lock()
	in := p.groups[group]
	p.mu.Unlock()
	if in {
		return nil
	}
	err = p.retry(ctx, func() error {
		res, err := p.cfg.Client.AddOffsetsToTxn(ctx, &kafka.AddOffsetsToTxnRequest{
			TransactionalID: p.cfg.TransactionalID, ProducerID: int(pid), ProducerEpoch: int(epoch), GroupID: group,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		return err
	})
	if err != nil {
		p.unclaim()
		return classify("add offsets", "", -1, err)
	}
	p.mu.Lock()
	p.groups[group] = true
	p.dirty = true
	p.mu.Unlock()
	return nil
}

// CommitOffsets commits offsets of a consumer group as part of the current
// transaction (AddOffsetsToTxn the first time in a transaction, then
// TxnOffsetCommit): they become the group's committed offsets exactly when
// the transaction commits, and never if it aborts. The group needs no
// members (generation -1). It may run concurrently with Produce.
func (p *Producer) CommitOffsets(ctx context.Context, group string, offsets map[string][]kafka.TxnOffsetCommit) error {
	if err := p.addGroup(ctx, group); err != nil {
		return err
	}
	pid, epoch, err := p.session()
	if err != nil {
		return err
	}
	err = p.retry(ctx, func() error {
		res, err := p.cfg.Client.TxnOffsetCommit(ctx, &kafka.TxnOffsetCommitRequest{
			TransactionalID: p.cfg.TransactionalID, GroupID: group, ProducerID: int(pid), ProducerEpoch: int(epoch),
			GenerationID: -1, Topics: offsets,
		})
		if err != nil {
			return err
		}
		for _, ps := range res.Topics {
			for _, pr := range ps {
				if pr.Error != nil {
					return pr.Error
				}
			}
		}
		return nil
	})
	if err != nil {
		p.unclaim()
		return classify("commit offsets", "", -1, err)
	}
	return nil
}

// Abort gives up the current transaction: it claims the id again, which
// aborts what was written since the last commit and bumps the epoch.
func (p *Producer) Abort(ctx context.Context) error {
	if err := p.Claim(ctx); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	return nil
}
