//go:build realkafka

package realkafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	ksasl "github.com/segmentio/kafka-go/sasl"
	fsasl "github.com/twmb/franz-go/pkg/sasl"
	"go.uber.org/goleak"
)

// shared is the cluster most tests use; tests that kill, restart or change
// security start their own.
var shared *Cluster

// wire records the request versions of every plaintext kafka-go Transport
// made by newClient; TestMain prints them.
var wire = newSniffer()

func TestMain(m *testing.M) {
	if !Available() {
		fmt.Println("realkafka: skipped (" + EnvRealKafka + "=0)")
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	port, err := FreePort()
	if err == nil {
		shared, err = Start(ctx, fmt.Sprintf("rk-shared-%d", os.Getpid()), port)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "realkafka: start shared cluster:", err)
		os.Exit(1)
	}
	fmt.Printf("realkafka: Kafka %s at %s, started in %v\n", Version(), shared.Addr(), shared.StartTime.Round(time.Millisecond))
	code := m.Run()
	fmt.Printf("realkafka: request versions kafka-go's Transport sent: %s\n", wire)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	if err := shared.Clean(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "realkafka: clean shared cluster:", err)
	}
	cancel()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "realkafka: goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startCluster starts a dedicated cluster for one test and cleans it up after.
func startCluster(t *testing.T, name string, opts ...Option) *Cluster {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, fmt.Sprintf("%s-%d", name, os.Getpid()), port, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: Kafka %s at %s ready in %v", c.Name(), Version(), c.Addr(), c.StartTime.Round(time.Millisecond))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Clean(ctx); err != nil {
			t.Errorf("clean %s: %v", c.Name(), err)
		}
	})
	return c
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a kafka-go Client on its own Transport; the Transport is
// closed at cleanup (its discover goroutine would leak otherwise).
func newClient(t *testing.T, addr string, tr *kafka.Transport) *kafka.Client {
	t.Helper()
	if tr == nil {
		tr = &kafka.Transport{}
	}
	if tr.ClientID == "" {
		tr.ClientID = "edgemirror-realkafka-test"
	}
	if tr.MetadataTTL == 0 {
		tr.MetadataTTL = time.Second
	}
	if tr.Dial == nil && tr.TLS == nil {
		tr.Dial = wire.dial
	}
	if tr.DialTimeout == 0 {
		tr.DialTimeout = 5 * time.Second
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(addr), Transport: tr, Timeout: 20 * time.Second}
}

// createTopic creates a topic and waits (bounded) until every partition has a
// leader, polling metadata.
func createTopic(t *testing.T, ctx context.Context, cl *kafka.Client, name string, partitions int, configs ...kafka.ConfigEntry) {
	t.Helper()
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs,
	}}})
	if err != nil {
		t.Fatalf("CreateTopics %s: %v", name, err)
	}
	if e := res.Errors[name]; e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
		t.Fatalf("CreateTopics %s: topic error %v", name, e)
	}
	waitLeaders(t, ctx, cl, name, partitions)
	waitServing(t, ctx, cl, name, partitions)
}

// createTopicOnly creates a topic and waits for metadata leaders only.
func createTopicOnly(t *testing.T, ctx context.Context, cl *kafka.Client, name string, partitions int) {
	t.Helper()
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil || res.Errors[name] != nil {
		t.Fatalf("CreateTopics %s: %v %v", name, err, res.Errors[name])
	}
	waitLeaders(t, ctx, cl, name, partitions)
}

// waitServing polls ListOffsets (a leader-only request) until every
// partition answers without error: metadata can name a leader before that
// broker serves the partition (NOT_LEADER_OR_FOLLOWER in between).
func waitServing(t *testing.T, ctx context.Context, cl *kafka.Client, name string, partitions int) {
	t.Helper()
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		lo, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{name: reqs}})
		ok := err == nil && len(lo.Topics[name]) == partitions
		if ok {
			for _, p := range lo.Topics[name] {
				if p.Error != nil {
					ok, err = false, p.Error
				}
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s not served after 30s: %v", name, err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitLeaders(t *testing.T, ctx context.Context, cl *kafka.Client, name string, partitions int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			ok := true
			for _, p := range md.Topics[0].Partitions {
				if p.Error != nil || p.Leader.ID < 0 || p.Leader.Host == "" {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s: partitions without leader after 30s (last err %v, md %+v)", name, err, md)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sniffer records the (api key, version) of every request a kafka-go
// Transport writes, by parsing the request frames on the wire.
type sniffer struct {
	mu   sync.Mutex
	seen map[int16]map[int16]bool
}

func newSniffer() *sniffer { return &sniffer{seen: map[int16]map[int16]bool{}} }

func (s *sniffer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, s: s}, nil
}

func (s *sniffer) record(key, version int16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[key] == nil {
		s.seen[key] = map[int16]bool{}
	}
	s.seen[key][version] = true
}

var apiNames = map[int16]string{0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 17: "SaslHandshake",
	18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 36: "SaslAuthenticate", 37: "CreatePartitions"}

// String lists "Name vN" sorted by api key.
func (s *sniffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []int
	for k := range s.seen {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	var out []string
	for _, k := range keys {
		var vs []string
		for v := range s.seen[int16(k)] {
			vs = append(vs, fmt.Sprintf("v%d", v))
		}
		sort.Strings(vs)
		name := apiNames[int16(k)]
		if name == "" {
			name = fmt.Sprintf("api%d", k)
		}
		out = append(out, name+" "+strings.Join(vs, "/"))
	}
	return strings.Join(out, ", ")
}

type sniffConn struct {
	net.Conn
	s    *sniffer
	hdr  []byte // first 8 bytes of the current frame: size, api key, version
	skip int    // bytes of the current frame still to pass through
}

func (c *sniffConn) Write(p []byte) (int, error) {
	for q := p; len(q) > 0; {
		if c.skip > 0 {
			n := min(c.skip, len(q))
			c.skip -= n
			q = q[n:]
			continue
		}
		n := min(8-len(c.hdr), len(q))
		c.hdr = append(c.hdr, q[:n]...)
		q = q[n:]
		if len(c.hdr) == 8 {
			c.s.record(int16(binary.BigEndian.Uint16(c.hdr[4:])), int16(binary.BigEndian.Uint16(c.hdr[6:])))
			c.skip = int(binary.BigEndian.Uint32(c.hdr)) - 4
			c.hdr = c.hdr[:0]
		}
	}
	return c.Conn.Write(p)
}

// scramMechanism adapts franz-go's SCRAM implementation to kafka-go's
// sasl.Mechanism, so kafka-go's Transport can do SCRAM-SHA-512 without
// kafka-go's sasl/scram package (which needs github.com/xdg-go/scram, not in
// our go.sum).
type scramMechanism struct{ m fsasl.Mechanism }

func (s scramMechanism) Name() string { return s.m.Name() }

func (s scramMechanism) Start(ctx context.Context) (ksasl.StateMachine, []byte, error) {
	sess, first, err := s.m.Authenticate(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	return scramSession{sess}, first, nil
}

type scramSession struct{ s fsasl.Session }

func (s scramSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	return s.s.Challenge(challenge)
}
