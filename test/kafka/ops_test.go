//go:build realkafka

package realkafka

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// produceN writes n records to partition 0 and returns the base offset.
func produceN(t *testing.T, ctx context.Context, cl *kafka.Client, topic string, n int, prefix string) int64 {
	t.Helper()
	recs := make([]kafka.Record, n)
	for i := range recs {
		recs[i] = kafka.Record{Key: kafka.NewBytes([]byte(fmt.Sprint(i))), Value: kafka.NewBytes([]byte(fmt.Sprintf("%s-%d", prefix, i))),
			Headers: []kafka.Header{{Key: "edgemirror-offset", Value: []byte(strconv.Itoa(i))}}}
	}
	res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...)})
	if err != nil || res.Error != nil {
		t.Fatalf("produce to %s: %v %v", topic, err, res.Error)
	}
	return res.BaseOffset
}

func fetchValues(t *testing.T, ctx context.Context, cl *kafka.Client, topic string, partition int) []string {
	t.Helper()
	fr, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: partition, Offset: 0, MaxBytes: 1 << 20})
	if err != nil || fr.Error != nil {
		t.Fatalf("fetch %s/%d: %v %v", topic, partition, err, fr.Error)
	}
	var out []string
	for _, r := range readAll(t, fr.Records) {
		out = append(out, string(r.Value))
	}
	return out
}

// SASL_SSL cluster: kafka-go's Transport (Client) with TLS + SCRAM-SHA-512 and
// TLS + PLAIN, the Dialer path (Reader/Conn) with PLAIN, and what the wrong
// password and a plaintext client look like.
func TestSASLSSL(t *testing.T) {
	c := startCluster(t, "rk-sasl", WithSASLSSL())
	ctx := testCtx(t, 3*time.Minute)
	sec, err := c.Security()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := sec.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	mechs := map[string]sasl.Mechanism{
		"SCRAM-SHA-512": scramMechanism{scram.Auth{User: sec.User, Pass: sec.Password}.AsSha512Mechanism()},
		"PLAIN":         plain.Mechanism{Username: sec.User, Password: sec.Password},
	}
	topic := "secure"
	for _, name := range []string{"SCRAM-SHA-512", "PLAIN"} {
		cl := newClient(t, c.Addr(), &kafka.Transport{TLS: tlsCfg, SASL: mechs[name]})
		if name == "SCRAM-SHA-512" {
			createTopic(t, ctx, cl, topic, 1)
		}
		produceN(t, ctx, cl, topic, 3, name)
		t.Logf("Transport TLS + %s: create/produce/fetch ok, %d records", name, len(fetchValues(t, ctx, cl, topic, 0)))
	}
	if got := fetchValues(t, ctx, newClient(t, c.Addr(), &kafka.Transport{TLS: tlsCfg, SASL: mechs["PLAIN"]}), topic, 0); len(got) != 6 {
		t.Errorf("records %v, want 6", got)
	}

	// Dialer path (what Reader and Conn use).
	d := &kafka.Dialer{Timeout: 10 * time.Second, TLS: tlsCfg, SASLMechanism: mechs["SCRAM-SHA-512"]}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{c.Addr()}, Topic: topic, Partition: 0, Dialer: d,
		MaxWait: 200 * time.Millisecond, ReadLagInterval: -1})
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	m, err := r.ReadMessage(rctx)
	cancel()
	r.Close()
	if err != nil {
		t.Errorf("Reader over TLS + SCRAM-SHA-512: %v", err)
	} else {
		t.Logf("Reader (Dialer) TLS + SCRAM-SHA-512: read %q", m.Value)
	}

	// Failures: wrong password; plaintext against the TLS listener; TLS without SASL.
	bad := []struct {
		name string
		tr   *kafka.Transport
	}{
		{"wrong password (SCRAM)", &kafka.Transport{TLS: tlsCfg, SASL: scramMechanism{scram.Auth{User: sec.User, Pass: "wrong"}.AsSha512Mechanism()}}},
		{"wrong password (PLAIN)", &kafka.Transport{TLS: tlsCfg, SASL: plain.Mechanism{Username: sec.User, Password: "wrong"}}},
		{"no TLS", &kafka.Transport{SASL: mechs["PLAIN"]}},
		{"TLS, no SASL", &kafka.Transport{TLS: tlsCfg}},
	}
	for _, b := range bad {
		cl := newClient(t, c.Addr(), b.tr)
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cl.Metadata(bctx, &kafka.MetadataRequest{Topics: []string{topic}})
		cancel()
		t.Logf("%s: err = %v", b.name, err)
		if err == nil {
			t.Errorf("%s: metadata succeeded", b.name)
		}
	}
}

// proxy forwards 127.0.0.1:listen to target, counting connections; it stops
// when ctx ends and waits for its goroutines.
type proxy struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, ln net.Listener, target string) *proxy {
	p := &proxy{ln: ln}
	var mu sync.Mutex
	var open []net.Conn
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, u)
			mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// ADVERTISED_HOST_PORT: the broker advertises a proxy's address; clients
// that bootstrap at the broker itself are sent through the proxy.
func TestAdvertisedProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, "rk-adv", WithAdvertisedAddr(ln.Addr().String()))
	p := startProxy(t, ln, c.ListenAddr())
	ctx := testCtx(t, 2*time.Minute)
	if c.Addr() != ln.Addr().String() {
		t.Errorf("Addr() = %s, want the advertised %s", c.Addr(), ln.Addr())
	}
	// bootstrap at the real listener: metadata points at the proxy
	cl := newClient(t, c.ListenAddr(), &kafka.Transport{Dial: (&net.Dialer{}).DialContext})
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if b := md.Brokers[0]; fmt.Sprintf("%s:%d", b.Host, b.Port) != ln.Addr().String() {
		t.Errorf("advertised broker %+v, want %s", b, ln.Addr())
	}
	createTopic(t, ctx, cl, "via-proxy", 1)
	produceN(t, ctx, cl, "via-proxy", 5, "p")
	if got := fetchValues(t, ctx, cl, "via-proxy", 0); len(got) != 5 {
		t.Errorf("fetched %v", got)
	}
	if p.conns.Load() == 0 {
		t.Errorf("no connection went through the proxy")
	}
	t.Logf("advertised %s: %d client connections went through the proxy", ln.Addr(), p.conns.Load())
}

// kafka.sh kill (SIGKILL) + restart keeps acknowledged data; measures the
// restart time after a kill and after a clean stop.
func TestKillRestartKeepsData(t *testing.T) {
	c := startCluster(t, "rk-kill")
	ctx := testCtx(t, 5*time.Minute)
	topic := "durable"
	pre := newClient(t, c.Addr(), nil)
	createTopic(t, ctx, pre, topic, 1)
	produceN(t, ctx, pre, topic, 10, "before")
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	afterKill := c.StartTime
	cl := newClient(t, c.Addr(), nil)
	waitServing(t, ctx, cl, topic, 1)
	if got := fetchValues(t, ctx, cl, topic, 0); len(got) != 10 {
		t.Fatalf("after kill+restart: %d records, want 10", len(got))
	}
	produceN(t, ctx, cl, topic, 1, "after")
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cl2 := newClient(t, c.Addr(), nil)
	waitServing(t, ctx, cl2, topic, 1)
	if got := fetchValues(t, ctx, cl2, topic, 0); len(got) != 11 {
		t.Fatalf("after stop+restart: %d records, want 11", len(got))
	}
	t.Logf("restart after SIGKILL: %v; restart after clean stop: %v", afterKill.Round(time.Millisecond), c.StartTime.Round(time.Millisecond))
	// a Client (Transport) made before the kill: does it recover by itself?
	var errs []string
	for i := range 20 {
		_, err := pre.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
		if err == nil {
			t.Logf("pre-kill Client after two restarts: ok on attempt %d, earlier errors %v", i+1, errs)
			return
		}
		errs = append(errs, err.Error())
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("pre-kill Client never recovered: %v", errs)
}
