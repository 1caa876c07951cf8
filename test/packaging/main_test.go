// Package packaging tests edgemirror's release as an operator receives it:
// the binaries and packages `make dist` writes (packaging/dist), the .deb
// installed, upgraded, removed and purged in a throwaway root, the .rpm's
// file list, the systemd units checked by systemd-analyze, and the arm64 and
// armv7 binaries shipping records under qemu-user-static.
//
// The tests install what they need from Debian (qemu-user-static, rpm,
// systemd) when it is missing. They need root (dpkg, overlay mounts); as
// another user they skip and say so.
package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// The release the tests build, with a version they can recognise.
const (
	testVersion    = "v9.8.7"
	testPkgVersion = "9.8.7"
	testCommit     = "0123456789ab"
	testDate       = "2026-01-02T03:04:05Z"
)

var (
	distDir string // release files built by TestMain
	distErr error
)

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "edgemirror-dist-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	distDir = filepath.Join(tmp, "dist")
	if out, err := buildRelease(distDir, testVersion, ""); err != nil {
		distErr = err
	} else {
		fmt.Print(out)
		// The aggregator (and native agents) of these tests are the
		// release's amd64 binary.
		os.Setenv("EDGEMIRROR_BIN", filepath.Join(distDir, "edgemirror-linux-amd64"))
	}
	goleak.VerifyTestMain(m, append(testkit.LeakOptions(),
		// The harness's HTTP clients keep idle connections to the processes.
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
		goleak.Cleanup(func(code int) {
			_ = os.RemoveAll(tmp)
			os.Exit(code)
		}))...)
}

// buildRelease runs packaging/dist (what `make dist` runs) into dir.
func buildRelease(dir, version, targets string) (string, error) {
	args := []string{"run", "./packaging/dist", "--out", dir, "--version", version,
		"--commit", testCommit, "--date", testDate}
	if targets != "" {
		args = append(args, "--targets", targets)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = harness.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var (
	newerOnce sync.Once
	newerDir  string
	newerErr  error
)

// newerDeb returns the amd64 .deb of a release newer than the one TestMain
// built (v9.8.8), built once, for the upgrade tests.
func newerDeb(t testing.TB) string {
	t.Helper()
	newerOnce.Do(func() {
		newerDir = filepath.Join(filepath.Dir(distDir), "newer")
		_, newerErr = buildRelease(newerDir, "v9.8.8", "amd64")
	})
	if newerErr != nil {
		t.Fatal(newerErr)
	}
	return filepath.Join(newerDir, "edgemirror_9.8.8_amd64.deb")
}

// dist returns the path of a release file, failing the test if the release
// could not be built.
func dist(t testing.TB, name string) string {
	t.Helper()
	if distErr != nil {
		t.Fatalf("release build failed: %v", distErr)
	}
	return filepath.Join(distDir, name)
}

var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "armv7": "armhf"}
var rpmArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64", "armv7": "armv7hl"}

func debFile(t testing.TB, arch string) string {
	return dist(t, fmt.Sprintf("edgemirror_%s_%s.deb", testPkgVersion, debArch[arch]))
}

func rpmFile(t testing.TB, arch string) string {
	return dist(t, fmt.Sprintf("edgemirror-%s-1.%s.rpm", testPkgVersion, rpmArch[arch]))
}

// needRoot skips a test that cannot run without root, saying why.
func needRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("SKIP: needs root to %s (running as uid %d)", why, os.Geteuid())
	}
}

var (
	aptMu      sync.Mutex
	aptUpdated bool
)

// tool returns the path of command, installing Debian package pkg with
// apt-get when it is missing. Without apt-get or root the test is skipped
// with the reason.
func tool(t testing.TB, command, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(command); err == nil {
		return p
	}
	aptMu.Lock()
	defer aptMu.Unlock()
	if p, err := exec.LookPath(command); err == nil {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skipf("SKIP: %s is not installed and there is no apt-get to install Debian package %s", command, pkg)
	}
	needRoot(t, "apt-get install "+pkg+" (for "+command+")")
	apt := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=300", "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(out, 30))
		}
	}
	if !aptUpdated {
		apt("update")
		aptUpdated = true
	}
	t.Logf("installing Debian package %s for %s", pkg, command)
	apt("install", "-y", "--no-install-recommends", pkg)
	p, err := exec.LookPath(command)
	if err != nil {
		t.Fatalf("%s still missing after installing %s", command, pkg)
	}
	return p
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command and returns its combined output, failing the test on
// a non-zero exit.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var b bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}
