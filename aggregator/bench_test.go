package aggregator

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/edgemirror/edgemirror/internal/testcerts"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// benchChunk returns a chunk of about size raw bytes of ~150-byte sensor
// records spread over partitions, and its raw size.
func benchChunk(size int, partitions int32) (*wire.Chunk, int) {
	c := &wire.Chunk{Seq: 1, Topics: []wire.Topic{{Name: "sensors", Partitions: partitions}}}
	raw := 0
	next := make([]int64, partitions)
	for i := 0; raw < size; i++ {
		p := int32(i) % partitions
		r := sensorRecords("sensors", p, next[p], 1)[0]
		next[p]++
		raw += wire.RecordSize(&r)
		c.Records = append(c.Records, r)
	}
	return c, wire.RawSize(c)
}

// shift moves every record of c past the offsets it had, so that the next
// apply writes everything again instead of deduplicating it.
func shift(c *wire.Chunk, partitions int32) {
	per := int64(len(c.Records)) / int64(partitions)
	if int64(len(c.Records))%int64(partitions) != 0 {
		per++
	}
	for i := range c.Records {
		c.Records[i].Offset += per
	}
}

// BenchmarkApply measures applying a 1 MiB chunk of ~150-byte sensor
// records (4 source partitions) to an in-process hub: the per-partition
// watermark check, batching and acks=all produce. "frame" adds decoding of
// the zstd frame, as the HTTP handler does. Run it with
//
//	go test -run '^$' -bench Apply ./aggregator
func BenchmarkApply(b *testing.B) {
	const partitions = 4
	for _, withDecode := range []bool{false, true} {
		name := "hub"
		if withDecode {
			name = "frame"
		}
		b.Run(name, func(b *testing.B) {
			hubCluster := newHubCluster(b)
			cfg := testConfig(hubCluster.ListenAddrs(), filepath.Join(b.TempDir(), "state"))
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			tr := &kafka.Transport{ClientID: "bench", MetadataTTL: time.Second}
			defer tr.CloseIdleConnections()
			client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr, Timeout: cfg.HubTimeout}
			w, err := newHub(&cfg, log, client, newMetrics()).newEdgeWriter("bench")
			if err != nil {
				b.Fatal(err)
			}
			dec, err := wire.NewDecoder(wire.DefaultLimits())
			if err != nil {
				b.Fatal(err)
			}
			defer dec.Close()
			enc, err := wire.NewEncoder(wire.CodecZstd, wire.LevelDefault)
			if err != nil {
				b.Fatal(err)
			}
			defer enc.Close()

			c, raw := benchChunk(1<<20, partitions)
			ctx := context.Background()
			// Create the hub topic and derive the watermarks outside the timing.
			if _, err := w.apply(ctx, []*wire.Chunk{c}); err != nil {
				b.Fatal(err)
			}
			var frame []byte
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				shift(c, partitions)
				chunk := c
				if withDecode {
					b.StopTimer()
					frame, err = enc.Encode(frame[:0], c)
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if chunk, err = dec.Decode(frame); err != nil {
						b.Fatal(err)
					}
				}
				res, err := w.apply(ctx, []*wire.Chunk{chunk})
				if err != nil {
					b.Fatal(err)
				}
				if res[0].written != len(c.Records) {
					b.Fatalf("written %d of %d records", res[0].written, len(c.Records))
				}
			}
			b.ReportMetric(float64(b.N*len(c.Records))/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(len(c.Records)), "records/chunk")
		})
	}
}

// BenchmarkUpload measures the chunk API end to end on loopback: a 1 MiB
// zstd chunk of sensor records posted by one client, authenticated by
// token, decoded and applied to an in-process hub, over HTTPS (TLS 1.3,
// HTTP/2) and over plain HTTP/1.1. Compare the MB/s of the two. Run it with
//
//	go test -run '^$' -bench Upload ./aggregator
func BenchmarkUpload(b *testing.B) {
	const partitions = 4
	for _, tlsOn := range []bool{false, true} {
		name := "plain"
		if tlsOn {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			hubCluster := newHubCluster(b)
			var ca *testcerts.CA
			if tlsOn {
				var err error
				if ca, err = testcerts.NewCA(b.TempDir(), "bench-ca"); err != nil {
					b.Fatal(err)
				}
			}
			s := newSecureServer(b, hubCluster, tokenLine("e1", "bench-token", ".*"), ca, nil)
			// h2c for plain HTTP, as the agent does.
			var h2c http.Protocols
			h2c.SetUnencryptedHTTP2(true)
			h2cTr := &http.Transport{Protocols: &h2c}
			b.Cleanup(h2cTr.CloseIdleConnections)
			client := &http.Client{Transport: &tokenRT{rt: h2cTr, token: "bench-token"}}
			if tlsOn {
				client = tlsClient(b, ca, nil, "bench-token")
			}
			f := newFrameBuilder(b)
			c, raw := benchChunk(1<<20, partitions)
			// Warm up: topic creation and watermark derivation.
			c.Seq = 1
			if a := post(b, client, s.url, chunkReq("e1", f.frame(c))); a.status != 200 {
				b.Fatal(a)
			}
			b.SetBytes(int64(raw))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				shift(c, partitions)
				c.Seq = uint64(i + 2)
				frame := f.frame(c)
				b.StartTimer()
				if a := post(b, client, s.url, request{edge: "e1", epoch: "5", floor: "1", body: frame}); a.status != 200 {
					b.Fatal(a)
				}
			}
		})
	}
}
