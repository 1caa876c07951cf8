package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/wan"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want wan.Link
	}{
		{[]string{"--target", "h:1"}, wan.LAN},
		{[]string{"--target", "h:1", "--link", "WAN"}, wan.WAN},
		{[]string{"--target", "h:1", "--link", "cell", "--rtt", "600ms"}, wan.Link{Rate: wan.Cell.Rate, RTT: 600 * time.Millisecond}},
		{[]string{"--target", "h:1", "--link", "wan", "--rate", "0"}, wan.Link{RTT: wan.WAN.RTT}},
		{[]string{"--target", "h:1", "--rate", "10Mbit/s", "--rtt", "100ms"}, wan.WAN},
	} {
		o, err := parseFlags(tc.args, io.Discard)
		if err != nil || o.link != tc.want || o.target != "h:1" || o.listen != wan.DefaultListen {
			t.Errorf("parseFlags(%q) = %+v, %v; want link %v", tc.args, o, err, tc.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		message     string
		hintContain string
	}{
		{nil, "--target is required", "--target"},
		{[]string{"--target", "h:1", "extra"}, `unexpected argument "extra"`, "--target"},
		{[]string{"--target", "h:1", "--rate", "fast"}, "--rate: ", "--rate 10Mbit/s"},
		{[]string{"--target", "h:1", "--rtt", "-1s"}, "--rtt -1s is negative", "--rtt 100ms"},
		{[]string{"--target", "h:1", "--link", "dsl"}, `--link "dsl"`, "--link cell"},
		{[]string{"--nope"}, "flag provided but not defined", "--target"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), tc.args, io.Discard, &stderr)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(ue.message, tc.message) || !strings.Contains(ue.hint, tc.hintContain) {
			t.Errorf("run(%q) = %#v, want usage error %q with hint containing %q", tc.args, err, tc.message, tc.hintContain)
			continue
		}
		stderr.Reset()
		if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "Try: ") {
			t.Errorf("run(%q): exit %d, stderr %q; want 2 and a Try: line", tc.args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) || exitCode(err, io.Discard) != 0 {
		t.Errorf("-h: %v, exit %d; want ErrHelp and 0", err, exitCode(err, io.Discard))
	}
	if !strings.Contains(stderr.String(), "--control") || !strings.Contains(stderr.String(), "Example:") {
		t.Errorf("-h printed %q", stderr.String())
	}
	if code := exitCode(errors.New("boom"), io.Discard); code != 1 {
		t.Errorf("runtime error: exit %d, want 1", code)
	}
}

// lines collects what run prints on stdout, safe for concurrent use.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// value returns the word after "key " on a printed line, if printed yet.
func (l *lines) value(key string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+" "); ok {
			return v, true
		}
	}
	return "", false
}

// TestRun runs the command against an echo server: a round trip through the
// proxy, then cut, stats, restore and a link change over the control endpoint,
// then a stop by ctx.
func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var targets sync.WaitGroup
	targets.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			targets.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	defer func() {
		ln.Close()
		targets.Wait()
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout lines
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--target", ln.Addr().String(), "--rtt", "20ms", "--control", "127.0.0.1:0", "--log-level", "error"}, &stdout, io.Discard)
	}()
	var proxyAddr, controlAddr string
	testkit.Eventually(t, 10*time.Second, "wanproxy state", func() error {
		var ok1, ok2 bool
		proxyAddr, ok1 = stdout.value("listen")
		controlAddr, ok2 = stdout.value("control")
		if !ok1 || !ok2 {
			return fmt.Errorf("stdout so far: %q", stdout.String())
		}
		return nil
	})

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	call := func(method, path string) statsJSON {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+controlAddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %s: %s", method, path, resp.Status, body)
		}
		var s statsJSON
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
		return s
	}

	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 20*time.Millisecond {
		t.Errorf("round trip %s through a 20ms link", rtt)
	}
	testkit.Eventually(t, 10*time.Second, "wanproxy state", func() error {
		if s := call("GET", pathStats); s.Up != 4 || s.Down != 4 || s.Open != 1 || s.RTT != 0.02 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})

	if s := call("POST", pathCut); !s.LinkDown {
		t.Errorf("after cut: %+v", s)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still works after cut")
	}
	if s := call("POST", pathRestore); s.LinkDown {
		t.Errorf("after restore: %+v", s)
	}
	if s := call("POST", pathLink+"?rate=1Mbit/s&rtt=300ms"); s.Rate != 125_000 || s.RTT != 0.3 {
		t.Errorf("after link change: %+v", s)
	}
	req, _ := http.NewRequest("POST", "http://"+controlAddr+pathLink+"?rate=fast", nil)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad rate: %v %v, want 400", resp, err)
	} else {
		resp.Body.Close()
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop 10s after cancel")
	}
}
