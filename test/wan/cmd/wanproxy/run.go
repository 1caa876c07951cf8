package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgemirror/edgemirror/internal/units"
	"github.com/edgemirror/edgemirror/test/wan"
)

const (
	// shutdownTimeout bounds how long the control server waits for requests in
	// progress when stopping.
	shutdownTimeout = 5 * time.Second
	// readHeaderTimeout bounds reading a control request's headers.
	readHeaderTimeout = 5 * time.Second

	exampleUsage = "wanproxy --target 127.0.0.1:9092 --rate 10Mbit/s --rtt 100ms --control 127.0.0.1:7070"
)

// options are the parsed command line.
type options struct {
	listen  string
	target  string
	link    wan.Link
	control string
	level   slog.Level
}

// preset returns the link a --link name stands for.
func preset(name string) (wan.Link, bool) {
	switch strings.ToLower(name) {
	case "lan":
		return wan.LAN, true
	case "wan":
		return wan.WAN, true
	case "cell":
		return wan.Cell, true
	}
	return wan.Link{}, false
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("wanproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", wan.DefaultListen, "`address` clients connect to (port 0 picks one; printed on stdout)")
	fs.StringVar(&o.target, "target", "", "`address` every connection is forwarded to (required)")
	linkName := fs.String("link", "lan", "preset `link`: lan (no impairment), wan (10Mbit/s, 100ms), cell (1Mbit/s, 300ms); --rate and --rtt override it")
	rate := fs.String("rate", "", "cap per direction: bytes/s, or with a unit such as 10Mbit/s, 2MB/s, 512KiB/s; 0 is unlimited")
	rtt := fs.Duration("rtt", 0, "added round-trip `time`, half each way, such as 100ms")
	fs.StringVar(&o.control, "control", "", "HTTP control `address`: POST /cut, POST /restore, POST /link?rate=&rtt=, GET /stats (empty: none)")
	fs.TextVar(&o.level, "log-level", slog.LevelInfo, "log `level` on stderr: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: wanproxy --target ADDR [flags]\n\nA TCP proxy that emulates a WAN link.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nExample:\n  %s\n", exampleUsage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err.Error(), exampleUsage}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0)), exampleUsage}
	}
	if o.target == "" {
		return o, usageError{"--target is required", exampleUsage}
	}
	l, ok := preset(*linkName)
	if !ok {
		return o, usageError{fmt.Sprintf("--link %q is not lan, wan or cell", *linkName), "wanproxy --target 127.0.0.1:9092 --link cell"}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["rate"] {
		r, err := units.ParseRate(*rate)
		if err != nil {
			return o, usageError{fmt.Sprintf("--rate: %v", err), "wanproxy --target 127.0.0.1:9092 --rate 10Mbit/s"}
		}
		l.Rate = r
	}
	if set["rtt"] {
		if *rtt < 0 {
			return o, usageError{fmt.Sprintf("--rtt %s is negative", *rtt), "wanproxy --target 127.0.0.1:9092 --rtt 100ms"}
		}
		l.RTT = *rtt
	}
	o.link = l
	return o, nil
}

// run is the whole command: parse args, run the proxy (and control server) until
// ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stderr, o.level)
	p, err := wan.New(wan.Config{Listen: o.listen, Target: o.target, Link: o.link, Logger: log})
	if err != nil {
		return fmt.Errorf("start proxy: %w", err)
	}
	defer p.Close()

	var ctl net.Listener
	if o.control != "" {
		if ctl, err = net.Listen("tcp", o.control); err != nil {
			return fmt.Errorf("listen for control on %s: %w", o.control, err)
		}
	}
	fmt.Fprintf(stdout, "listen %s\n", p.Addr())
	if ctl != nil {
		fmt.Fprintf(stdout, "control %s\n", ctl.Addr())
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(ctx) })
	if ctl != nil {
		srv := &http.Server{Handler: controlHandler(p), ReadHeaderTimeout: readHeaderTimeout}
		g.Go(func() error {
			if err := srv.Serve(ctl); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve control: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}
