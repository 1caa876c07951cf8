// Command wanproxy runs the wan package's link emulator out of process, for
// shell scripts and benchmarks: a TCP proxy with a bandwidth cap and added
// latency per direction, and an optional HTTP control endpoint to cut and
// restore the link and read its counters.
//
//	wanproxy --target 127.0.0.1:9092 --link wan --control 127.0.0.1:7070
//	curl -X POST 127.0.0.1:7070/cut
//	curl 127.0.0.1:7070/stats
//
// On start it prints "listen ADDR" and, with --control, "control ADDR" on
// stdout, so a script can bind port 0 and read the ports back. It stops on
// SIGINT or SIGTERM. Exit codes: 0 on a clean stop or -h, 1 on a runtime error,
// 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is bad usage: its message and a hint go to stderr, exit code 2.
type usageError struct {
	message string
	hint    string
}

func (e usageError) Error() string { return e.message }

// exitCode turns run's error into the process exit code, printing it.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "wanproxy: %s\nTry: %s\n", ue.message, ue.hint)
		return 2
	default:
		fmt.Fprintf(stderr, "wanproxy: %v\n", err)
		return 1
	}
}

// newLogger logs text to w at level.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
