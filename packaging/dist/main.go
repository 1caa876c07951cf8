// Command dist builds edgemirror's release: a static binary for each
// target architecture, a .deb and an .rpm of each (packaging/nfpm.yaml,
// built with nfpm as a library, so nothing but Go is needed), and a
// SHA256SUMS file over all of them. Run it from the repository root, as
// `make dist` does:
//
//	go run ./packaging/dist --out dist --version v1.2.0 --commit abc123 --date 2026-01-01T00:00:00Z
//
// It refuses a binary larger than --max-binary-bytes and prints the size of
// every file it wrote.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Target is one architecture of the release.
type Target struct {
	Name   string // file name suffix: amd64, arm64, armv7
	GOARCH string
	GOARM  string
	Nfpm   string // nfpm's architecture name (translated to deb's and rpm's)
}

// Targets are the architectures a release is built for: x86 servers and
// the arm64 and armv7 edge gateways.
var Targets = []Target{
	{Name: "amd64", GOARCH: "amd64", Nfpm: "amd64"},
	{Name: "arm64", GOARCH: "arm64", Nfpm: "arm64"},
	{Name: "armv7", GOARCH: "arm", GOARM: "7", Nfpm: "arm7"},
}

// DefaultMaxBinaryBytes is the largest binary a release may ship (20 MB):
// edge gateways have little flash.
const DefaultMaxBinaryBytes = 20_000_000

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "dist: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dist", flag.ContinueOnError)
	out := fs.String("out", "dist", "output directory (emptied of earlier release files first)")
	version := fs.String("version", "dev", "version shown by `edgemirror version`; the packages get a Debian/RPM-safe form of it")
	commit := fs.String("commit", "unknown", "source commit shown by `edgemirror version`")
	date := fs.String("date", "", "build date, RFC 3339 (default now, UTC); also the files' time stamp in the packages")
	config := fs.String("config", "packaging/nfpm.yaml", "nfpm package definition")
	only := fs.String("targets", "", "comma-separated subset of amd64,arm64,armv7 (default all)")
	maxBytes := fs.Int64("max-binary-bytes", DefaultMaxBinaryBytes, "fail if a binary is larger (bytes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	built := time.Now().UTC().Truncate(time.Second)
	if *date != "" {
		t, err := time.Parse(time.RFC3339, *date)
		if err != nil {
			return fmt.Errorf("parse --date %q: want RFC 3339 such as 2026-01-01T00:00:00Z: %w", *date, err)
		}
		built = t.UTC()
	}
	for name, v := range map[string]string{"--version": *version, "--commit": *commit} {
		if v == "" || strings.ContainsAny(v, " \t\n'\"") {
			return fmt.Errorf("%s %q: must be non-empty, without spaces or quotes", name, v)
		}
	}
	targets, err := selectTargets(*only)
	if err != nil {
		return err
	}
	pkgVersion := PackageVersion(*version)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	if err := clean(*out); err != nil {
		return err
	}

	start := time.Now()
	var written []string
	for _, t := range targets {
		bin := filepath.Join(*out, "edgemirror-linux-"+t.Name)
		ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s -X main.date=%s", *version, *commit, built.Format(time.RFC3339))
		if err := goBuild(ctx, t, ldflags, bin); err != nil {
			return err
		}
		fi, err := os.Stat(bin)
		if err != nil {
			return err
		}
		if fi.Size() > *maxBytes {
			return fmt.Errorf("binary %s is %s, more than the limit of %s", bin, mib(fi.Size()), mib(*maxBytes))
		}
		written = append(written, bin)
		for _, format := range []string{"deb", "rpm"} {
			p, err := Package(*config, format, t, bin, pkgVersion, built, *out)
			if err != nil {
				return err
			}
			written = append(written, p)
		}
	}
	sums, err := writeSums(*out, written)
	if err != nil {
		return err
	}
	written = append(written, sums)

	fmt.Fprintf(stdout, "edgemirror %s (package version %s, commit %s, built %s) in %s:\n", *version, pkgVersion, *commit, built.Format(time.RFC3339), *out)
	for _, p := range written {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  %-50s %10d bytes  %7s\n", filepath.Base(p), fi.Size(), mib(fi.Size()))
	}
	fmt.Fprintf(stdout, "built in %s\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func selectTargets(only string) ([]Target, error) {
	if only == "" {
		return Targets, nil
	}
	var out []Target
	for _, name := range strings.Split(only, ",") {
		i := slices.IndexFunc(Targets, func(t Target) bool { return t.Name == strings.TrimSpace(name) })
		if i < 0 {
			return nil, fmt.Errorf("unknown target %q in --targets: want a comma-separated subset of amd64,arm64,armv7", name)
		}
		out = append(out, Targets[i])
	}
	return out, nil
}

// clean removes the files an earlier run wrote, so SHA256SUMS never lists
// stale ones.
func clean(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read output directory: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "edgemirror") || n == "SHA256SUMS" {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("remove old release file: %w", err)
			}
		}
	}
	return nil
}

// goBuild builds a static, reproducible binary for t.
func goBuild(ctx context.Context, t Target, ldflags, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/edgemirror")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.GOARCH, "GOARM="+t.GOARM)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build linux/%s: %w\n%s", t.Name, err, b)
	}
	return nil
}

var (
	unsafeVersion = regexp.MustCompile(`[^A-Za-z0-9.+~]+`)
	dots          = regexp.MustCompile(`\.{2,}`)
)

// sanitize replaces what dpkg and rpm do not allow in a version by dots.
func sanitize(s string) string {
	return strings.Trim(dots.ReplaceAllString(unsafeVersion.ReplaceAllString(s, "."), "."), ".")
}

// PackageVersion turns a version as `git describe` prints it into one that
// dpkg and rpm sort correctly: "v1.2.3" is "1.2.3", "v1.2.3-4-gabc" is
// "1.2.3+4.gabc", and a bare commit ("abc123", no tag yet) is
// "0.0.0~gitabc123", which sorts before any release.
func PackageVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		return "0.0.0~git" + sanitize(v)
	}
	core, rest, _ := strings.Cut(v, "-")
	core = sanitize(core)
	if rest == "" {
		return core
	}
	return core + "+" + sanitize(rest)
}

// Package writes the format ("deb" or "rpm") package of binary for t into
// dir and returns its path.
func Package(config, format string, t Target, binary, version string, mtime time.Time, dir string) (string, error) {
	vars := map[string]string{"ARCH": t.Nfpm, "VERSION": version, "BINARY": binary}
	cfg, err := nfpm.ParseFileWithEnvMapping(config, func(k string) string { return vars[k] })
	if err != nil {
		return "", fmt.Errorf("read %s: %w", config, err)
	}
	info, err := cfg.Get(format)
	if err != nil {
		return "", fmt.Errorf("%s for %s: %w", format, t.Name, err)
	}
	info.MTime = mtime
	info = nfpm.WithDefaults(info)
	// nfpm's semver parsing would split a "+4.gabc" suffix off; keep the
	// version as computed.
	info.VersionSchema = "none"
	info.Version = version
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("%s for %s: %w", format, t.Name, err)
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info.Target = filepath.Join(dir, pkgr.ConventionalFileName(info))
	f, err := os.Create(info.Target)
	if err != nil {
		return "", fmt.Errorf("create package: %w", err)
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("build %s for %s: %w", format, t.Name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", info.Target, err)
	}
	return info.Target, nil
}

// writeSums writes dir/SHA256SUMS in the format `sha256sum -c` reads.
func writeSums(dir string, files []string) (string, error) {
	var b strings.Builder
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", p, err)
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), filepath.Base(p))
	}
	path := filepath.Join(dir, "SHA256SUMS")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", errors.Join(errors.New("write SHA256SUMS"), err)
	}
	return path, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
