package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// fakeFleet answers GET /v1/edges and /v1/losses with fixed rows.
func fakeFleet(t *testing.T, edges []wire.EdgeStatus, losses []wire.LossEvent, stale string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathEdges, func(w http.ResponseWriter, r *http.Request) {
		if stale != "" {
			w.Header().Set("Edgemirror-Stale", stale)
		}
		_ = json.NewEncoder(w).Encode(edges)
	})
	mux.HandleFunc("GET "+wire.PathLosses, func(w http.ResponseWriter, r *http.Request) {
		out := []wire.LossEvent{}
		for _, l := range losses {
			if e := r.URL.Query().Get("edge"); e == "" || e == l.Edge {
				out = append(out, l)
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestStatusTableAndJSON(t *testing.T) {
	seen := time.Now().Add(-90 * time.Second)
	rows := []wire.EdgeStatus{
		{Edge: "plant-7", State: wire.EdgeOK, LastSeen: &seen, BacklogRecords: 0, RPOSeconds: 0, RecordsPerSecond: 412.5, Version: "v1.4.0"},
		{Edge: "ship-12", State: wire.EdgeDisconnected, LastSeen: &seen, BacklogRecords: 48211, BacklogBytes: 2 << 20,
			RPOSeconds: 26 * 3600, LostRecords: 1200, Version: "v1.3.9"},
		{Edge: "store-3", State: wire.EdgeNeverSeen},
	}
	srv := fakeFleet(t, rows, nil, "")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"status", "--aggregator", srv.URL}, &out, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("status printed %d lines:\n%s", len(lines), out.String())
	}
	col := strings.Index(lines[0], "STATE")
	for i, want := range []string{"ok", "disconnected", "never-seen"} {
		if got := strings.Fields(lines[i+1][col:])[0]; got != want {
			t.Errorf("line %d: state column %q, want %q (table not aligned?):\n%s", i+1, got, want, out.String())
		}
	}
	for _, want := range []string{"1m30s ago", "48211", "2MiB", "26h00m", "1200", "412.5", "never", "v1.3.9"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"status", "--json"}, &out, &bytes.Buffer{}, env(map[string]string{"EDGEMIRROR_AGGREGATOR": srv.URL})); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if len(got) != 3 {
		t.Fatalf("--json printed %d rows", len(got))
	}
	for _, f := range []string{"edge", "state", "last_seen", "backlog_records", "backlog_bytes", "rpo_seconds", "lost_records", "records_per_second", "version"} {
		if _, ok := got[1][f]; !ok {
			t.Errorf("--json row lacks %q: %v", f, got[1])
		}
	}
	if f := strings.Fields(lines[3]); len(f) != 9 || f[2] != "never" || f[3] != "-" || f[5] != "-" {
		t.Errorf("never-seen row: %q", lines[3])
	}
	if got[2]["last_seen"] != nil || got[1]["rpo_seconds"] != float64(26*3600) {
		t.Errorf("--json rows %v", got)
	}
}

func TestStatusWarnsWhenStale(t *testing.T) {
	srv := fakeFleet(t, []wire.EdgeStatus{}, nil, "read _edgemirror.status: broker down")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"status", "--aggregator", srv.URL}, &out, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "no edge has reported yet") || !strings.Contains(out.String(), "may be stale: read _edgemirror.status: broker down") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestLossesTable(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	evs := []wire.LossEvent{
		{ID: "a", Edge: "ship-12", Topic: "sensors", Partition: 2, FirstOffset: 1000, LastOffset: 1999, Records: 1000, Reason: wire.LossReasonDropOldest, Time: at},
		{ID: "b", Edge: "plant-7", Topic: "orders", Partition: 0, FirstOffset: 5, LastOffset: 9, Records: 5, Reason: wire.LossReasonEdgeRetention, Time: at},
	}
	srv := fakeFleet(t, nil, evs, "")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"losses", "--aggregator", srv.URL, "--edge", "ship-12"}, &out, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "ship-12") || strings.Contains(s, "plant-7") || !strings.Contains(s, "1 ranges, 1000 records lost") ||
		!strings.Contains(s, "buffer-full-drop-oldest") || !strings.Contains(s, "2026-12-01T10:00:00Z") {
		t.Errorf("losses --edge ship-12:\n%s", s)
	}
	out.Reset()
	if err := run(context.Background(), []string{"losses", "--aggregator", srv.URL, "--json"}, &out, &bytes.Buffer{}, env(nil)); err != nil {
		t.Fatal(err)
	}
	var got []wire.LossEvent
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got) != 2 {
		t.Errorf("losses --json: %v %s", err, out.String())
	}
	out.Reset()
	srv2 := fakeFleet(t, nil, nil, "")
	if err := run(context.Background(), []string{"losses", "--aggregator", srv2.URL}, &out, &bytes.Buffer{}, env(nil)); err != nil || !strings.Contains(out.String(), "no losses recorded") {
		t.Errorf("no losses: %v %q", err, out.String())
	}
}

func TestQueryCommandErrors(t *testing.T) {
	for _, args := range [][]string{
		{"status"},
		{"status", "--aggregator", "ftp://x"},
		{"losses", "--aggregator", "http://x:1", "--edge", "bad edge"},
		{"status", "--aggregator", "http://x:1", "--timeout", "0s"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
		if code := exitCode(err, &bytes.Buffer{}); code != 2 {
			t.Errorf("%v: exit %d (%v), want 2", args, code, err)
		}
	}
	// An aggregator answering an error: exit 1 with its message.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Error: "hub unreachable"})
	}))
	defer srv.Close()
	err := run(context.Background(), []string{"status", "--aggregator", srv.URL}, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
	if code := exitCode(err, &bytes.Buffer{}); code != 1 || err == nil || !strings.Contains(err.Error(), "hub unreachable") {
		t.Errorf("error answer: exit %d, %v", code, err)
	}
}
