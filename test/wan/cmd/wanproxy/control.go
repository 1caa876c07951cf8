package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/edgemirror/edgemirror/internal/units"
	"github.com/edgemirror/edgemirror/test/wan"
)

// Control endpoint paths.
const (
	pathCut     = "/cut"
	pathRestore = "/restore"
	pathLink    = "/link"
	pathStats   = "/stats"
)

// busiestWindow is the window the stats report the busiest rate over.
const busiestWindow = 2 * time.Second

// statsJSON is the body of every control response.
type statsJSON struct {
	LinkDown    bool    `json:"link_down"`
	Rate        int64   `json:"rate_bytes_per_second"`
	RTT         float64 `json:"rtt_seconds"`
	Up          int64   `json:"up_bytes"`
	Down        int64   `json:"down_bytes"`
	Conns       int64   `json:"conns_total"`
	Open        int64   `json:"conns_open"`
	Refused     int64   `json:"conns_refused_total"`
	Late        float64 `json:"max_late_seconds"`
	BusiestUp   float64 `json:"busiest_up_2s_bytes_per_second"`
	BusiestDown float64 `json:"busiest_down_2s_bytes_per_second"`
}

func stats(p *wan.Proxy) statsJSON {
	s, l := p.Stats(), p.Link()
	return statsJSON{
		LinkDown:    p.Down(),
		Rate:        l.Rate,
		RTT:         l.RTT.Seconds(),
		Up:          s.Up,
		Down:        s.Down,
		Conns:       s.Conns,
		Open:        s.Open,
		Refused:     s.Refused,
		Late:        s.Late.Seconds(),
		BusiestUp:   p.BusiestWindow(busiestWindow),
		BusiestDown: p.BusiestWindowDown(busiestWindow),
	}
}

// controlHandler serves the control endpoints. Every response is the stats as
// JSON, after the action.
func controlHandler(p *wan.Proxy) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathCut, func(w http.ResponseWriter, r *http.Request) {
		p.Cut()
		writeStats(w, p)
	})
	mux.HandleFunc("POST "+pathRestore, func(w http.ResponseWriter, r *http.Request) {
		p.Restore()
		writeStats(w, p)
	})
	mux.HandleFunc("POST "+pathLink, func(w http.ResponseWriter, r *http.Request) {
		l, err := linkFromQuery(p.Link(), r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.SetLink(l)
		writeStats(w, p)
	})
	mux.HandleFunc("GET "+pathStats, func(w http.ResponseWriter, r *http.Request) {
		writeStats(w, p)
	})
	return mux
}

// linkFromQuery changes l by the request's rate and rtt parameters, each
// optional, spelled as the --rate and --rtt flags.
func linkFromQuery(l wan.Link, r *http.Request) (wan.Link, error) {
	q := r.URL.Query()
	if v := q.Get("rate"); v != "" {
		rate, err := units.ParseRate(v)
		if err != nil {
			return l, fmt.Errorf("rate: %w", err)
		}
		l.Rate = rate
	}
	if v := q.Get("rtt"); v != "" {
		rtt, err := time.ParseDuration(v)
		if err != nil || rtt < 0 {
			return l, fmt.Errorf("rtt %q: want a non-negative duration such as 100ms", v)
		}
		l.RTT = rtt
	}
	return l, nil
}

func writeStats(w http.ResponseWriter, p *wan.Proxy) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(stats(p))
}
