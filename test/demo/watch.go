package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/edgemirror/edgemirror/test/internal/harness"
	"github.com/edgemirror/edgemirror/test/wan"
)

// stats is one look at the pipeline: the producer, the agent's metrics and
// the hub.
type stats struct {
	produced int
	inHub    int64
	chunks   float64 // edgemirror_buffer_chunks: stored, not yet acknowledged
	bufBytes float64 // edgemirror_buffer_payload_bytes
	inflight float64 // edgemirror_agent_chunks_inflight
	wire     float64 // edgemirror_agent_wire_bytes_total, both directions
	raw      float64 // edgemirror_agent_chunk_raw_bytes_total
	frame    float64 // edgemirror_agent_chunk_frame_bytes_total
	down     bool

	maxChunks, maxBytes float64 // largest buffer seen while the link was down
}

func (s *stats) ratio() float64 {
	if s.frame == 0 {
		return 0
	}
	return s.raw / s.frame
}

func (s *stats) line(elapsed time.Duration) string {
	link := "UP"
	if s.down {
		link = "DOWN"
	}
	ratio := "   -"
	if s.frame > 0 {
		ratio = fmt.Sprintf("%4.1fx", s.ratio())
	}
	return fmt.Sprintf("%5.1fs  produced %7s  buffered %3.0f chunks %8s  in flight %.0f  in hub %7s  wire %8s  ratio %s  link %s",
		elapsed.Seconds(), count(s.produced), s.chunks, size(s.bufBytes), s.inflight, count(int(s.inHub)),
		size(s.wire), ratio, link)
}

// sample refreshes s. A source that does not answer within a second keeps
// its previous values: the line shows the last known state.
func (s *stats) sample(ctx context.Context, prod *harness.Producer, agentMetrics string, hubBrokers []string) {
	s.produced = prod.Out.Count()
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if m, err := harness.Scrape(sctx, agentMetrics); err == nil {
		s.chunks = m["edgemirror_buffer_chunks"]
		s.bufBytes = m["edgemirror_buffer_payload_bytes"]
		s.inflight = m["edgemirror_agent_chunks_inflight"]
		s.wire = m["edgemirror_agent_wire_bytes_total"]
		s.raw = m["edgemirror_agent_chunk_raw_bytes_total"]
		s.frame = m["edgemirror_agent_chunk_frame_bytes_total"]
	}
	// End minus start offsets is cheap but also counts the hub's commit
	// markers; the committed records are counted only once it could be
	// complete.
	if n, err := harness.CountAll(sctx, hubBrokers, hubTopic); err == nil {
		s.inHub = min(n, int64(s.produced))
		if n >= int64(s.produced) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if c, err := harness.CountCommitted(cctx, hubBrokers, hubTopic); err == nil {
				s.inHub = c
			}
			cancel()
		}
	}
	if s.down {
		s.maxChunks = max(s.maxChunks, s.chunks)
		s.maxBytes = max(s.maxBytes, s.bufBytes)
	}
}

// watch shows progress about four times a second, cuts the link in the
// middle of production and restores it, and returns once production has
// ended and the hub holds every record produced with nothing left in the
// agent's buffer.
func watch(ctx context.Context, c config, start time.Time, proxy *wan.Proxy, agent *proc, agentMetrics string,
	prod *harness.Producer, hubBrokers []string, produced <-chan error) (*stats, error) {
	// On a terminal one line is rewritten in place; otherwise (a CI log, a
	// pipe) a plain line is printed every second.
	tty := isTerminal(os.Stdout)
	show := func(line string) {
		if tty {
			fmt.Printf("\r\x1b[K%s", line)
		} else {
			fmt.Println(line)
		}
	}
	event := func(format string, args ...any) {
		if tty {
			fmt.Print("\r\x1b[K")
		}
		fmt.Printf("%5.1fs  -- %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	cutAt := start.Add((c.produceFor - c.cut) / 2) // the cut is centred in the production window
	var cutDone, drained, producing = c.cut == 0, c.cut == 0, true
	var restoredAt time.Time
	s := &stats{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return s, fmt.Errorf("--duration %s passed before the hub had everything: %s of %s records in the hub, %.0f chunks buffered",
					c.duration, count(int(s.inHub)), count(s.produced), s.chunks)
			}
			return s, errors.New("interrupted")
		case err := <-produced:
			if err != nil {
				return s, err
			}
			producing = false
			event("all %s readings produced at the edge", count(prod.Out.Count()))
		case <-tick.C:
		}
		if agent.exited() {
			return s, fmt.Errorf("the agent exited unexpectedly: %v (see %s)", agent.err, agent.log)
		}

		switch now := time.Now(); {
		case !cutDone && !s.down && now.After(cutAt):
			proxy.Cut()
			event("link cut for %s: the agent keeps reading the edge into its buffer", c.cut)
		case !cutDone && s.down && now.After(cutAt.Add(c.cut)):
			proxy.Restore()
			cutDone, restoredAt = true, now
			event("link restored: %.0f chunks (%s) buffered, draining", s.chunks, size(s.bufBytes))
		}
		s.down = proxy.Down()
		s.sample(ctx, prod, agentMetrics, hubBrokers)
		if cutDone && !drained && s.chunks <= 1 {
			drained = true
			event("buffer drained %.1fs after the link came back", time.Since(restoredAt).Seconds())
		}

		done := !producing && s.inHub >= int64(s.produced) && s.chunks == 0 && s.inflight == 0
		if tty || n%4 == 0 || done {
			show(s.line(time.Since(start)))
		}
		if done {
			if tty {
				fmt.Println()
			}
			return s, nil
		}
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// count formats n with thousands separators: 200,000.
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// size formats bytes in powers of ten: 1.4 MB.
func size(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f GB", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.0f kB", b/1e3)
	}
	return fmt.Sprintf("%.0f B", b)
}
