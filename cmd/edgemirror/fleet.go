package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgemirror/edgemirror/internal/units"
	"github.com/edgemirror/edgemirror/internal/wire"
)

// defaultQueryTimeout bounds one question to an aggregator.
const defaultQueryTimeout = 15 * time.Second

func runStatus(ctx context.Context, args []string, stdout, _ io.Writer, getenv func(string) string) error {
	var (
		aggURL  string
		asJSON  bool
		timeout = defaultQueryTimeout
	)
	cmd := newCommand("status",
		"Shows every edge of the fleet as the hub records it (any aggregator gives the same answer):\n"+
			"state (ok, behind, disconnected, never-seen), when it was last heard from, its buffer backlog,\n"+
			"its RPO (what would be lost if the site were gone now) and the records it lost.",
		"edgemirror status --aggregator http://hub.example:8080")
	cmd.section("Query")
	cmd.str(&aggURL, "aggregator", "aggregator base URL, http:// or https:// (required)")
	cmd.boolv(&asJSON, "json", "print the rows as a JSON array (the fields of GET /v1/edges) instead of a table")
	cmd.duration(&timeout, "timeout", "bound on the question to the aggregator")
	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	u, err := queryURL(aggURL, wire.PathEdges, nil, timeout, cmd.example)
	if err != nil {
		return err
	}
	var rows []wire.EdgeStatus
	raw, stale, err := getJSON(ctx, u, timeout, &rows)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	printStatus(stdout, rows, time.Now())
	if stale != "" {
		fmt.Fprintf(stdout, "\nwarning: the aggregator could not read the hub; this view may be stale: %s\n", stale)
	}
	return nil
}

// printStatus prints the aligned status table.
func printStatus(w io.Writer, rows []wire.EdgeStatus, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tSTATE\tLAST SEEN\tBACKLOG RECORDS\tBACKLOG BYTES\tRPO\tLOST RECORDS\tRECORDS/S\tVERSION")
	for _, r := range rows {
		seen := "never"
		if r.LastSeen != nil {
			seen = fmtAge(now.Sub(*r.LastSeen)) + " ago"
		}
		version := r.Version
		if version == "" {
			version = "-"
		}
		backlog, bytes, rpo, rate := "-", "-", "-", "-"
		if r.LastSeen != nil {
			backlog, bytes = strconv.FormatInt(r.BacklogRecords, 10), units.FormatBytes(r.BacklogBytes)
			rpo = fmtAge(time.Duration(r.RPOSeconds * float64(time.Second)))
			rate = strconv.FormatFloat(r.RecordsPerSecond, 'f', 1, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Edge, r.State, seen, backlog, bytes, rpo,
			r.LostRecords, rate, version)
	}
	tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(w, "(no edge has reported yet)")
	}
}

// fmtAge prints a duration at a precision that suits it: 850ms, 42s,
// 7m12s, 3h05m, 2d04h.
func fmtAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func runLosses(ctx context.Context, args []string, stdout, _ io.Writer, getenv func(string) string) error {
	var (
		aggURL  string
		edge    string
		asJSON  bool
		timeout = defaultQueryTimeout
	)
	cmd := newCommand("losses",
		"Lists the ranges of records that were lost (buffer full with drop-oldest, edge retention, a corrupt\n"+
			"buffer frame, a permanent refusal), as recorded exactly once in the hub's events topic.",
		"edgemirror losses --aggregator http://hub.example:8080 --edge plant-7")
	cmd.section("Query")
	cmd.str(&aggURL, "aggregator", "aggregator base URL, http:// or https:// (required)")
	cmd.str(&edge, "edge", "only this edge's losses (default: every edge)")
	cmd.boolv(&asJSON, "json", "print the events as a JSON array instead of a table")
	cmd.duration(&timeout, "timeout", "bound on the question to the aggregator")
	if err := cmd.parseOrHelp(args, getenv, stdout); err != nil {
		return err
	}
	q := url.Values{}
	if edge != "" {
		if err := wire.ValidEdgeID(edge); err != nil {
			return &usageError{message: "--edge: " + err.Error(), hint: cmd.example}
		}
		q.Set("edge", edge)
	}
	u, err := queryURL(aggURL, wire.PathLosses, q, timeout, cmd.example)
	if err != nil {
		return err
	}
	var evs []wire.LossEvent
	raw, stale, err := getJSON(ctx, u, timeout, &evs)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	printLosses(stdout, evs)
	if stale != "" {
		fmt.Fprintf(stdout, "\nwarning: the aggregator could not read the hub; this list may be stale: %s\n", stale)
	}
	return nil
}

// printLosses prints the aligned loss table.
func printLosses(w io.Writer, evs []wire.LossEvent) {
	if len(evs) == 0 {
		fmt.Fprintln(w, "no losses recorded")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tTOPIC\tPARTITION\tFIRST OFFSET\tLAST OFFSET\tRECORDS\tREASON\tTIME")
	var total int64
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", e.Edge, e.Topic, e.Partition, e.FirstOffset, e.LastOffset,
			e.Records, e.Reason, e.Time.UTC().Format(time.RFC3339))
		total += e.Records
	}
	tw.Flush()
	fmt.Fprintf(w, "%d ranges, %d records lost\n", len(evs), total)
}

// queryURL checks the flags of a query command and builds its URL.
func queryURL(base, path string, q url.Values, timeout time.Duration, example string) (string, error) {
	if base == "" {
		return "", &usageError{message: "--aggregator is required", hint: example}
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", &usageError{message: fmt.Sprintf("--aggregator %q must be an http:// or https:// URL", base), hint: example}
	}
	if timeout <= 0 {
		return "", &usageError{message: "--timeout must be positive", hint: example}
	}
	u = u.JoinPath(path)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// getJSON GETs u and decodes the answer into out; it returns the raw body
// and the aggregator's staleness warning, if any.
func getJSON(ctx context.Context, u string, timeout time.Duration, out any) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("query aggregator: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("query aggregator: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, "", fmt.Errorf("read answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var er wire.ErrorResponse
		if json.Unmarshal(body, &er) != nil || er.Error == "" {
			er.Error = strings.TrimSpace(string(body))
		}
		return nil, "", fmt.Errorf("query aggregator: %s answered %s: %s", u, resp.Status, er.Error)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, "", fmt.Errorf("decode answer of %s: %w", u, err)
	}
	return body, resp.Header.Get("Edgemirror-Stale"), nil
}
