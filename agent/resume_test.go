package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/edgemirror/edgemirror/buffer"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// resumeStub answers /v1/resume for whatever epoch is asked with next and
// max.
func resumeStub(t *testing.T, next, maxSeq uint64) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wire.PathResume {
			http.NotFound(w, r)
			return
		}
		epoch, _ := strconv.ParseUint(r.Header.Get(wire.HeaderEpoch), 10, 64)
		writeTestJSON(w, http.StatusOK, wire.ResumeResponse{Epoch: epoch, NextSeq: next, MaxSeq: maxSeq})
	}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestResumeAfterRollback: what resume does with the aggregators' answers.
// A buffer opened with next seq 4 (chunks 1..3 held) is told the
// aggregator applied up to 9 and saw 12: it was rolled back, and must never
// number a chunk at or below 12 again under its epoch.
func TestResumeAfterRollback(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	cases := []struct {
		name          string
		next, max     uint64
		extraDead     bool // a second configured aggregator does not answer
		appendedSince bool // a chunk was cut after the buffer was opened
		wantNext      uint64
		wantRenewed   bool
		wantChunks    []uint64
	}{
		{name: "not rolled back", next: 3, max: 3, wantNext: 4, wantChunks: []uint64{3}},
		{name: "rolled back, every aggregator answered", next: 10, max: 12, wantNext: 13},
		{name: "rolled back, one aggregator silent", next: 10, max: 12, extraDead: true, wantNext: 13, wantRenewed: true},
		{name: "rolled back, chunk cut under a reused number", next: 10, max: 12, appendedSince: true, wantNext: 5, wantRenewed: true, wantChunks: []uint64{4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			base := resumeStub(t, tc.next, tc.max)
			if tc.extraDead {
				base += "," + deadURL
			}
			s := newTestShipper(t, ctx, base)
			appendN := func(n int) {
				for i := 0; i < n; i++ {
					seq := s.store.NextSeq()
					meta := buffer.ChunkMeta{Seq: seq, Records: 1, Ranges: []buffer.Range{{Topic: "t", First: int64(seq), Last: int64(seq), Records: 1}}}
					if err := s.store.Append(ctx, []byte("frame"), meta, map[buffer.PartitionKey]int64{{Topic: "t"}: int64(seq) + 1}); err != nil {
						t.Fatal(err)
					}
				}
			}
			appendN(3)
			s.openNext = s.store.NextSeq()
			if tc.appendedSince {
				appendN(1)
			}
			epoch := s.store.Epoch()
			if !s.resume(ctx) {
				t.Fatal("resume found no aggregator")
			}
			if got := s.store.NextSeq(); got != tc.wantNext {
				t.Errorf("next seq %d, want %d", got, tc.wantNext)
			}
			if renewed := s.store.Epoch() != epoch; renewed != tc.wantRenewed {
				t.Errorf("epoch renewed: %v, want %v", renewed, tc.wantRenewed)
			}
			var held []uint64
			for s.store.Stats().Chunks > len(held) {
				ch, err := s.store.Lease(ctx)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, ch.Seq)
			}
			if len(held) != len(tc.wantChunks) || (len(held) > 0 && held[0] != tc.wantChunks[0]) {
				t.Errorf("held chunks %v, want %v", held, tc.wantChunks)
			}
		})
	}
}

// TestSeqReusedRenewsEpoch: an aggregator that knows the chunk's seq with
// other content answers 409 seq-reused; the agent renews its buffer epoch
// and sends the chunk again at once, under the new epoch.
func TestSeqReusedRenewsEpoch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first uint64
	epochs := make(chan uint64, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		epoch, _ := strconv.ParseUint(r.Header.Get(wire.HeaderEpoch), 10, 64)
		epochs <- epoch
		if epoch == first {
			writeTestJSON(w, http.StatusConflict, wire.ErrorResponse{Error: "applied before with other content", Code: wire.CodeSeqReused})
			return
		}
		writeTestJSON(w, http.StatusOK, wire.ChunkResponse{Seq: 1, Records: 1, Written: 1})
	}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()
	s := newTestShipper(t, ctx, srv.URL)
	s.link = newLink()
	first = s.store.Epoch()
	meta := buffer.ChunkMeta{Seq: 1, Records: 1, Ranges: []buffer.Range{{Topic: "t", First: 0, Last: 0, Records: 1}}}
	if err := s.store.Append(ctx, []byte("frame"), meta, map[buffer.PartitionKey]int64{{Topic: "t"}: 1}); err != nil {
		t.Fatal(err)
	}
	ch, err := s.store.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ship(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if e1, e2 := <-epochs, <-epochs; e1 != first || e2 == first || e2 != s.store.Epoch() {
		t.Fatalf("sent under epochs %d then %d (first %d, now %d); want the first, then the renewed one", e1, e2, first, s.store.Epoch())
	}
	if n := s.store.Stats().Chunks; n != 0 {
		t.Errorf("%d chunks left after the ack, want 0", n)
	}
}
