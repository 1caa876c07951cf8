// Command kready is kafka.sh's readiness probe: it connects to one bootstrap
// address, sends a Metadata request and succeeds (exit 0) when the answer lists
// at least one broker. A KRaft broker is listed only once it has registered
// with the controller and been unfenced, so this means "ready for clients".
//
// It talks to the bootstrap connection only and never dials the advertised
// addresses, so it works when the broker advertises a proxy that is not up.
// It is much cheaper than the JVM admin tools (milliseconds, not seconds).
//
// Exit codes: 0 ready, 1 not ready (reason on stderr), 2 bad usage.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kready:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kready", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "bootstrap host:port (required)")
	timeout := fs.Duration("timeout", 2*time.Second, "bound for the whole check")
	caFile := fs.String("ca", "", "PEM CA file: use TLS and trust this CA")
	user := fs.String("user", "", "SASL/PLAIN user (needs -ca)")
	pass := fs.String("pass", "", "SASL/PLAIN password")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *addr == "" {
		return usageError{"-addr is required; try: kready -addr 127.0.0.1:9092"}
	}

	d := &kafka.Dialer{Timeout: *timeout, ClientID: "kready"}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", *caFile)
		}
		d.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if *user != "" {
		d.SASLMechanism = plain.Mechanism{Username: *user, Password: *pass}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata from %s: %w", *addr, err)
	}
	if len(brokers) == 0 {
		return errors.New("metadata lists no broker yet")
	}
	for _, b := range brokers {
		fmt.Fprintf(stdout, "broker %d %s:%d\n", b.ID, b.Host, b.Port)
	}
	return nil
}
