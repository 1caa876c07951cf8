package packaging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sysroot is a throwaway copy of this machine's root file system: an overlay
// with / as its read-only lower layer and a temp dir as its upper layer,
// mounted in a private mount namespace for each command, which runs
// chrooted in it. dpkg, useradd and the maintainer scripts run for real, as
// on a gateway, and every change lands in the upper layer: the machine stays
// as it was. /run is empty in it, so the scripts see no running systemd.
type sysroot struct{ dir string }

const sysrootScript = `set -e
R="$1"; shift
mount -t overlay overlay -o lowerdir=/,upperdir="$R/upper",workdir="$R/work" "$R/root"
mount --rbind /dev "$R/root/dev"
mount -t proc proc "$R/root/proc"
mount -t tmpfs tmpfs "$R/root/run"
mount -t tmpfs tmpfs "$R/root/tmp"
exec chroot "$R/root" "$@"`

func newSysroot(t *testing.T) *sysroot {
	t.Helper()
	needRoot(t, "install packages into an overlay of / (dpkg, useradd, mount)")
	tool(t, "unshare", "util-linux")
	tool(t, "dpkg", "dpkg")
	r := &sysroot{dir: t.TempDir()}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := r.exec("true"); err != nil {
		t.Skipf("SKIP: cannot mount an overlay of / in a private mount namespace here (%v): %s", err, out)
	}
	return r
}

func (r *sysroot) exec(args ...string) (string, error) {
	return runErr("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", sysrootScript, "sh", r.dir}, args...)...)
}

// run runs args in the root and fails the test if it fails.
func (r *sysroot) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.exec(args...)
	if err != nil {
		t.Fatalf("in the throwaway root: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// put copies the host file src to dst inside the root.
func (r *sysroot) put(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(r.dir, "upper", dst)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// exists reports whether path exists inside the root.
func (r *sysroot) exists(path string) bool {
	_, err := r.exec("test", "-e", path)
	return err == nil
}

// stat returns "owner:group mode type" of each path inside the root.
func (r *sysroot) stat(t *testing.T, paths ...string) map[string]string {
	t.Helper()
	out := r.run(t, append([]string{"stat", "-c", "%n|%U:%G %a %F"}, paths...)...)
	m := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, v, ok := strings.Cut(line, "|"); ok {
			m[name] = v
		}
	}
	return m
}
