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
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"
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
	// coords are the broker ids of the coordinators found last.
	coords map[coordKey]int32
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
	return &Producer{cfg: cfg, seqs: make(map[tp]int32), added: make(map[tp]bool), groups: make(map[string]bool),
		coords: make(map[coordKey]int32)}, nil
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
	var want []int32
	p.mu.Lock()
	for _, part := range partitions {
		if !p.added[tp{topic, part}] {
			want = append(want, part)
		}
	}
	p.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	err = p.retry(ctx, func() error {
		return p.addPartitions(ctx, pid, epoch, topic, want)
	})
	if err != nil {
		p.unclaim()
		return classify("add partitions", topic, -1, err)
	}
	p.mu.Lock()
	for _, part := range want {
		p.added[tp{topic, part}] = true
	}
	p.dirty = true
	p.mu.Unlock()
	return nil
}

// Produce writes recs as one batch to a partition added to the transaction
// and returns the offset of its first record. Calls for different
// partitions may run concurrently.
func (p *Producer) Produce(ctx context.Context, topic string, partition int32, recs []Record) (int64, error) {
	base, err := p.ProduceBatches(ctx, []Batch{{Topic: topic, Partition: partition, Records: recs}})
	if be, ok := err.(*BatchError); ok {
		return 0, be.Err
	}
	if err != nil {
		return 0, err
	}
	return base[0], nil
}

// Batch is the records ProduceBatches writes to one partition.
type Batch struct {
	Topic     string
	Partition int32
	Records   []Record
}

// BatchError is ProduceBatches' error: which batch failed, and why.
type BatchError struct {
	Index int // of the batch in the call
	Err   *Error
}

func (e *BatchError) Error() string { return e.Err.Error() }
func (e *BatchError) Unwrap() error { return e.Err }

// ProduceBatches writes one batch to each of several partitions added to
// the transaction, with one produce request per partition leader (a
// produce request carries at most one batch per partition, so the
// partitions must differ), and returns the offset of each batch's first
// record. On failure the error is a *BatchError naming a failed batch; the
// others' outcome is then of no interest, since the transaction must be
// claimed again.
func (p *Producer) ProduceBatches(ctx context.Context, batches []Batch) ([]int64, error) {
	pid, epoch, err := p.session()
	if err != nil {
		return nil, err
	}
	enc := make([][]byte, len(batches))
	seqs := make([]int32, len(batches))
	seen := make(map[tp]bool, len(batches))
	p.mu.Lock()
	for i, b := range batches {
		key := tp{b.Topic, b.Partition}
		in := p.added[key]
		seqs[i] = p.seqs[key]
		var why string
		switch {
		case !in:
			why = "partition not added to the transaction"
		case seen[key]:
			why = "two batches for one partition in one call"
		}
		if why != "" {
			p.mu.Unlock()
			return nil, &BatchError{Index: i, Err: &Error{Kind: Unavailable, Op: "produce", Topic: b.Topic,
				Partition: b.Partition, Err: errors.New(why)}}
		}
		seen[key] = true
	}
	p.mu.Unlock()
	// Encode (and compress) the batches side by side.
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc[i], errs[i] = encodeBatch(batchHeader{producerID: pid, producerEpoch: epoch, baseSequence: seqs[i],
				transactional: true, compression: p.cfg.Compression}, batches[i].Records)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b := &batches[i]
			return nil, &BatchError{Index: i, Err: &Error{Kind: Refused, Op: "produce", Topic: b.Topic, Partition: b.Partition, Err: err}}
		}
	}
	base := make([]int64, len(batches))
	done := make([]bool, len(batches))
	var failed *partAnswer
	// The identical bytes on every attempt: if an earlier attempt was
	// appended, the leader answers it as a duplicate of its sequence.
	err = p.retry(ctx, func() error {
		failed = nil
		var pending []int
		for i := range batches {
			if !done[i] {
				pending = append(pending, i)
			}
		}
		answers, err := p.sendBatches(ctx, batches, enc, pending)
		if err != nil {
			failed = &partAnswer{index: pending[0], err: err}
			return err
		}
		for _, a := range answers {
			if a.err == nil {
				done[a.index], base[a.index] = true, a.base
			} else if failed == nil || (retriable(failed.err) && !retriable(a.err)) {
				failed = &a // a refusal outweighs a retriable answer
			}
		}
		if failed != nil {
			return failed.err
		}
		return nil
	})
	if err != nil {
		p.unclaim()
		i := 0
		if failed != nil {
			i = failed.index
		}
		e := classify("produce", batches[i].Topic, batches[i].Partition, err)
		if failed != nil && len(failed.recordErrors) > 0 {
			e.RecordErrors = failed.recordErrors
		}
		return nil, &BatchError{Index: i, Err: e}
	}
	p.mu.Lock()
	for i, b := range batches {
		p.seqs[tp{b.Topic, b.Partition}] = seqs[i] + int32(len(b.Records))
	}
	p.mu.Unlock()
	return base, nil
}

// partAnswer is a partition leader's answer to one batch.
type partAnswer struct {
	index        int // of the batch
	base         int64
	err          error
	recordErrors map[int]error
}

// sendBatches sends the pending batches, one produce request per partition
// leader as the client's metadata has them, the requests side by side, and
// returns each batch's answer: a request without an answer gives each of
// its batches the transport's error. A stale leader shows as a per-batch
// NOT_LEADER_OR_FOLLOWER or a refusal of the request to mix partitions of
// two leaders, both retried with fresh metadata. The error is the
// metadata lookup's.
func (p *Producer) sendBatches(ctx context.Context, batches []Batch, enc [][]byte, pending []int) ([]partAnswer, error) {
	leaders, err := p.leaders(ctx, batches, pending)
	if err != nil {
		return nil, err
	}
	byLeader := make(map[int][]int)
	var order []int
	for _, i := range pending {
		l := leaders[i]
		if _, ok := byLeader[l]; !ok {
			order = append(order, l)
		}
		byLeader[l] = append(byLeader[l], i)
	}
	var (
		mu      sync.Mutex
		answers []partAnswer
		wg      sync.WaitGroup
	)
	for _, l := range order {
		wg.Add(1)
		go func(idx []int) {
			defer wg.Done()
			a, err := p.sendRequest(ctx, batches, enc, idx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				for _, i := range idx { // no answer: every batch of it is pending still
					answers = append(answers, partAnswer{index: i, err: err})
				}
				return
			}
			answers = append(answers, a...)
		}(byLeader[l])
	}
	wg.Wait()
	return answers, nil
}

// leaders maps each pending batch to its partition's leader in the
// client's (cached) metadata; -1 where it has none, which the broker then
// answers.
func (p *Producer) leaders(ctx context.Context, batches []Batch, pending []int) (map[int]int, error) {
	leaders := make(map[int]int, len(pending))
	if len(pending) == 1 {
		leaders[pending[0]] = -1
		return leaders, nil
	}
	var topics []string
	seen := make(map[string]bool)
	for _, i := range pending {
		if t := batches[i].Topic; !seen[t] {
			seen[t] = true
			topics = append(topics, t)
		}
	}
	md, err := p.cfg.Client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	lead := make(map[tp]int)
	for _, t := range md.Topics {
		for _, pt := range t.Partitions {
			lead[tp{t.Name, int32(pt.ID)}] = pt.Leader.ID
		}
	}
	for _, i := range pending {
		l, ok := lead[tp{batches[i].Topic, batches[i].Partition}]
		if !ok {
			l = -1
		}
		leaders[i] = l
	}
	return leaders, nil
}

// sendRequest sends the batches idx in one produce request and returns
// each one's answer.
func (p *Producer) sendRequest(ctx context.Context, batches []Batch, enc [][]byte, idx []int) ([]partAnswer, error) {
	req := &rawproduce.Request{
		TransactionalID: p.cfg.TransactionalID,
		Acks:            int16(kafka.RequireAll),
		Timeout:         produceTimeoutMs(ctx, p.cfg.Client.Timeout),
	}
	topicAt := make(map[string]int)
	where := make(map[tp]int, len(idx)) // partition → batch index
	for _, i := range idx {
		b := &batches[i]
		t, ok := topicAt[b.Topic]
		if !ok {
			t = len(req.Topics)
			topicAt[b.Topic] = t
			req.Topics = append(req.Topics, rawproduce.RequestTopic{Topic: b.Topic})
		}
		req.Topics[t].Partitions = append(req.Topics[t].Partitions, rawproduce.RequestPartition{
			Partition: b.Partition, RecordSet: protocol.RawRecordSet{Reader: bytes.NewReader(enc[i])}})
		where[tp{b.Topic, b.Partition}] = i
	}
	m, err := p.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	res, ok := m.(*produce.Response)
	if !ok {
		return nil, fmt.Errorf("produce: unexpected answer %T", m)
	}
	answered := make(map[int]bool, len(idx))
	var out []partAnswer
	for _, t := range res.Topics {
		for _, pr := range t.Partitions {
			i, ok := where[tp{t.Topic, pr.Partition}]
			if !ok || answered[i] {
				continue
			}
			answered[i] = true
			a := partAnswer{index: i, base: pr.BaseOffset}
			if code := kafka.Error(pr.ErrorCode); pr.ErrorCode != 0 && !errors.Is(code, kafka.DuplicateSequenceNumber) {
				a.err = code
				if pr.ErrorMessage != "" {
					a.err = fmt.Errorf("%w: %s", code, pr.ErrorMessage)
				}
			}
			if a.err != nil && len(pr.RecordErrors) > 0 {
				a.recordErrors = make(map[int]error, len(pr.RecordErrors))
				for _, re := range pr.RecordErrors {
					a.recordErrors[int(re.BatchIndex)] = errors.New(re.BatchIndexErrorMessage)
				}
			}
			out = append(out, a)
		}
	}
	for _, i := range idx {
		if !answered[i] {
			out = append(out, partAnswer{index: i, err: fmt.Errorf("produce: no answer for %s/%d", batches[i].Topic, batches[i].Partition)})
		}
	}
	return out, nil
}

// roundTrip sends a request the way kafka-go's Client methods do: bounded
// by the client's Timeout, to the client's cluster, through its transport.
func (p *Producer) roundTrip(ctx context.Context, req protocol.Message) (protocol.Message, error) {
	c := p.cfg.Client
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	if c.Addr == nil {
		return nil, errors.New("no address was given for the kafka cluster on the client")
	}
	t := c.Transport
	if t == nil {
		t = kafka.DefaultTransport
	}
	return t.RoundTrip(ctx, c.Addr, req)
}

// produceTimeoutMs is the broker-side produce timeout kafka-go's Client
// sends: half of what is left of the client's Timeout and the context's
// deadline (the rest is for the answer to come back), 500 ms without
// either.
func produceTimeoutMs(ctx context.Context, clientTimeout time.Duration) int32 {
	timeout := clientTimeout
	if deadline, ok := ctx.Deadline(); ok {
		if remain := time.Until(deadline); remain < timeout {
			timeout = remain
		}
	}
	if timeout <= 0 {
		return 500
	}
	return int32((timeout / 2).Milliseconds())
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
		return p.endTxn(ctx, pid, epoch, true)
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
		return p.addOffsets(ctx, pid, epoch, group)
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
		return p.txnOffsetCommit(ctx, pid, epoch, group, offsets)
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
