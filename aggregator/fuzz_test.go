package aggregator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// FuzzRequestHandler sends arbitrary requests to the guarded API: any path
// of it, any edge header and Authorization, any body. The handler never
// panics, answers JSON with a known status, and never accepts a chunk
// without e-a's token, under another edge id, or with a topic outside
// e-a's rule.
func FuzzRequestHandler(f *testing.F) {
	hub := newHubCluster(f)
	s := newSecureServer(f, hub, tokenLine("e-a", "token-a", "^sensors$")+"\n", nil, func(c *Config) {
		c.OrderWait = 20 * time.Millisecond
		c.MaxChunkBytes, c.MaxRawBytes = 64<<10, 256<<10
		c.MaxDecodedBytes = 1 << 20
	})
	h := s.routes()
	fb := newFrameBuilder(f)
	good := fb.frame(chunkOf(1, []wire.Topic{{Name: "sensors", Partitions: 1}}, sensorRecords("sensors", 0, 0, 3)))
	bad := fb.frame(chunkOf(2, []wire.Topic{{Name: "secret", Partitions: 1}}, sensorRecords("secret", 0, 0, 3)))
	f.Add(uint8(0), "e-a", "Bearer token-a", "1", good)
	f.Add(uint8(0), "e-b", "Bearer token-a", "1", good)
	f.Add(uint8(0), "e-a", "Bearer token-a", "1", bad)
	f.Add(uint8(0), "", "Bearer nope", "1", good)
	f.Add(uint8(1), "e-a", "Bearer token-a", "1", []byte(`{"ranges":[{"topic":"sensors","partition":0,"first_offset":0,"last_offset":1,"records":2,"reason":"edge-retention"}]}`))
	f.Add(uint8(2), "e-a", "bearer token-a", "x", []byte{})
	f.Add(uint8(3), "e-a", "Basic abc", "1", good[:40])
	dec, err := wire.NewDecoder(wire.Limits{MaxFrameBytes: 64 << 10, MaxRawBytes: 256 << 10})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(dec.Close)
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 409: true, 413: true, 429: true, 503: true}
	f.Fuzz(func(t *testing.T, which uint8, edge, auth, epoch string, body []byte) {
		method, path := http.MethodPost, wire.PathChunks
		switch which % 4 {
		case 1:
			path = wire.PathLosses
		case 2:
			method, path = http.MethodGet, wire.PathResume
		case 3:
			method, path = http.MethodGet, wire.PathLosses
		}
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", wire.ContentTypeChunk)
		if which%4 == 1 {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range map[string]string{wire.HeaderEdge: edge, "Authorization": auth, wire.HeaderEpoch: epoch, wire.HeaderFloor: "1"} {
			if v != "" && validHeaderValue(v) {
				req.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("%s %s answered %d: %s", method, path, rec.Code, rec.Body.Bytes())
		}
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s answered %d with a body that is not JSON: %q", method, path, rec.Code, rec.Body.Bytes())
		}
		if rec.Code != 200 {
			return
		}
		scheme, tok, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) != "token-a" {
			t.Fatalf("%s %s accepted with Authorization %q", method, path, req.Header.Get("Authorization"))
		}
		if e := req.Header.Get(wire.HeaderEdge); e != "" && e != "e-a" {
			t.Fatalf("%s %s accepted as edge %q with e-a's token", method, path, e)
		}
		if path == wire.PathChunks {
			c, err := dec.Decode(body)
			if err != nil {
				t.Fatalf("accepted an undecodable chunk: %v", err)
			}
			for _, tp := range c.Topics {
				if tp.Name != "sensors" {
					t.Fatalf("accepted a chunk with topic %q", tp.Name)
				}
			}
		}
	})
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
