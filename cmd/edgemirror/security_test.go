package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgemirror/edgemirror/internal/testcerts"
)

// --check reads every secret file, shows only file names, and warns about
// files others can read.
func TestCheckShowsNoSecretsAndWarnsAboutModes(t *testing.T) {
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue("server", testcerts.Options{CommonName: "agg", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	edgeCert, err := ca.Issue("e1", testcerts.Options{EdgeURI: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const token, password = "tok-3f9a1c-secret", "pw-77c1d0-secret"
	tokenFile := write("token", token+"\n", 0o644) // too open
	pwFile := write("password", password+"\n", 0o600)
	edges := write("edges", "e1 cert ^s$\ne2 token:sha256:"+strings.Repeat("ab", 32)+"\n", 0o640) // too open

	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"agent", "--check", "--edge-id", "e1", "--brokers", "127.0.0.1:9092",
		"--aggregator", "https://127.0.0.1:8443", "--tls-ca", ca.CertFile, "--tls-cert", edgeCert.CertFile, "--tls-key", edgeCert.KeyFile,
		"--token-file", tokenFile, "--kafka-tls", "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", "u",
		"--kafka-sasl-password-file", pwFile, "--buffer-dir", filepath.Join(dir, "b")}, &out, &errOut, env(nil))
	if err != nil {
		t.Fatalf("agent --check: %v\n%s", err, errOut.String())
	}
	all := out.String() + errOut.String()
	for _, secret := range []string{token, password} {
		if strings.Contains(all, secret) {
			t.Errorf("agent --check shows a secret:\n%s", all)
		}
	}
	if !strings.Contains(errOut.String(), "--token-file "+tokenFile+" is readable by group or others") {
		t.Errorf("no warning about the token file's mode:\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "--kafka-sasl-password-file") {
		t.Errorf("warning about a 0600 file:\n%s", errOut.String())
	}
	if !strings.Contains(out.String(), "credential=cert:") || !strings.Contains(out.String(), "sasl scram-sha-512 user=u") {
		t.Errorf("--check summary lacks the security settings:\n%s", out.String())
	}

	out.Reset()
	errOut.Reset()
	aggArgs := []string{"aggregator", "--check", "--listen", ":8443", "--brokers", "127.0.0.1:9092", "--state-dir", filepath.Join(dir, "s"),
		"--tls-cert", server.CertFile, "--tls-key", server.KeyFile, "--client-ca", ca.CertFile, "--edges-file", edges}
	if err := run(context.Background(), aggArgs, &out, &errOut, env(nil)); err != nil {
		t.Fatalf("aggregator --check: %v", err)
	}
	if !strings.Contains(errOut.String(), "--edges-file "+edges+" is readable by group or others") {
		t.Errorf("no warning about the edges file's mode:\n%s", errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), strings.Repeat("ab", 32)) {
		t.Error("aggregator --check shows a token hash")
	}

	// A broken edges file fails --check with its line.
	write("edges", "e1 cert\ne2 token:sha256:short\n", 0o600)
	err = run(context.Background(), aggArgs, &out, &errOut, env(nil))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("broken edges file: %v, want an error naming line 2", err)
	}
	// Cert edges without --client-ca.
	write("edges", "e1 cert\n", 0o600)
	err = run(context.Background(), aggArgs[:len(aggArgs)-4], &out, &errOut, env(map[string]string{"EDGEMIRROR_EDGES_FILE": edges}))
	if err == nil || !strings.Contains(err.Error(), "--client-ca") {
		t.Errorf("cert edges without --client-ca: %v", err)
	}
}

// A client certificate that names another edge stops the agent at start.
func TestAgentRefusesCertificateOfAnotherEdge(t *testing.T) {
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue("e2", testcerts.Options{EdgeURI: "e2"})
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"agent", "--check", "--edge-id", "e1", "--brokers", "127.0.0.1:9092",
		"--aggregator", "https://127.0.0.1:8443", "--tls-cert", other.CertFile, "--tls-key", other.KeyFile,
		"--buffer-dir", filepath.Join(dir, "b")}, &bytes.Buffer{}, &bytes.Buffer{}, env(nil))
	if err == nil || !strings.Contains(err.Error(), `names edge "e2", but --edge-id is "e1"`) {
		t.Errorf("got %v", err)
	}
	err = run(context.Background(), []string{"agent", "--check", "--edge-id", "e1", "--brokers", "127.0.0.1:9092",
		"--aggregator", "http://127.0.0.1:8080", "--tls-ca", ca.CertFile, "--buffer-dir", filepath.Join(dir, "b")},
		&bytes.Buffer{}, &bytes.Buffer{}, env(nil))
	if err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("--tls-ca with http://: %v", err)
	}
}
