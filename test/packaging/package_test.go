package packaging

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// packaged is every path the package owns (parents such as /usr/bin
// aside), with its owner, group, mode and type after installation.
var packaged = map[string]string{
	"/usr/bin/edgemirror":                                   "root:root 755 regular file",
	"/usr/lib/systemd/system/edgemirror-agent.service":      "root:root 644 regular file",
	"/usr/lib/systemd/system/edgemirror-aggregator.service": "root:root 644 regular file",
	"/etc/edgemirror":                                       "root:root 755 directory",
	"/etc/edgemirror/agent.env":                             "root:root 600 regular file",
	"/etc/edgemirror/aggregator.env":                        "root:root 600 regular file",
	"/var/lib/edgemirror":                                   "edgemirror:edgemirror 700 directory",
	"/var/lib/edgemirror-aggregator":                        "edgemirror:edgemirror 700 directory",
}

// sharedDirs are parents the package lists but does not own alone.
var sharedDirs = []string{"/", "/.", "/etc", "/usr", "/usr/bin", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system", "/var", "/var/lib"}

func packagedPaths() []string {
	var out []string
	for p := range packaged {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ownPaths drops the shared parents from a package's file list.
func ownPaths(list string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !slices.Contains(sharedDirs, l) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// TestReleaseFiles: every binary is a static Linux executable of its
// architecture, at most 20 MB, and SHA256SUMS lists every release file
// with its right digest.
func TestReleaseFiles(t *testing.T) {
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "armv7": elf.EM_ARM}
	for _, arch := range []string{"amd64", "arm64", "armv7"} {
		bin := dist(t, "edgemirror-linux-"+arch)
		fi, err := os.Stat(bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes (%.1f MiB)", filepath.Base(bin), fi.Size(), float64(fi.Size())/(1<<20))
		if fi.Size() > 20_000_000 {
			t.Errorf("%s is %d bytes, more than 20 MB", bin, fi.Size())
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machines[arch] {
			t.Errorf("%s: ELF machine %v, want %v", bin, f.Machine, machines[arch])
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v)", bin, p.Type)
			}
		}
		f.Close()
		for _, pkg := range []string{debFile(t, arch), rpmFile(t, arch)} {
			if _, err := os.Stat(pkg); err != nil {
				t.Errorf("package missing: %v", err)
			}
		}
	}

	sums, err := os.Open(dist(t, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: bad line %q", sc.Text())
		}
		b, err := os.ReadFile(dist(t, name))
		if err != nil {
			t.Fatalf("SHA256SUMS lists %s: %v", name, err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	entries, err := os.ReadDir(distDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !listed[e.Name()] {
			t.Errorf("SHA256SUMS does not list %s", e.Name())
		}
	}
	if len(listed) != 9 {
		t.Errorf("SHA256SUMS lists %d files, want 3 binaries and 6 packages", len(listed))
	}
}

// TestBinariesShowVersion: the amd64 binary reports the version, commit and
// build date given to make dist.
func TestBinariesShowVersion(t *testing.T) {
	out := run(t, dist(t, "edgemirror-linux-amd64"), "version")
	want := fmt.Sprintf("edgemirror %s (commit %s, built %s, ", testVersion, testCommit, testDate)
	if !strings.HasPrefix(out, want) || !strings.Contains(out, "linux/amd64") {
		t.Fatalf("version printed %q, want prefix %q and linux/amd64", out, want)
	}
}

// TestDebInstallUpgradeRemovePurge installs the amd64 .deb into a throwaway
// root with dpkg, as on a gateway: files, owners and modes, the system
// user, nothing enabled or started; the installed binary runs version and
// --check with the packaged env files; an upgrade keeps the buffer and the
// edited config; remove keeps the buffer; purge deletes it.
func TestDebInstallUpgradeRemovePurge(t *testing.T) {
	r := newSysroot(t)
	hostHadUser := hostHas("getent", "passwd", "edgemirror")
	r.put(t, debFile(t, "amd64"), "/edgemirror-test/edgemirror.deb")

	if pre := run(t, "dpkg-deb", "-f", debFile(t, "amd64"), "Pre-Depends"); strings.TrimSpace(pre) != "passwd" {
		t.Errorf("Pre-Depends %q, want passwd (useradd in preinst)", pre)
	}
	out := r.run(t, "dpkg", "-i", "/edgemirror-test/edgemirror.deb")
	if strings.Contains(out, "Created symlink") {
		t.Errorf("install enabled a unit:\n%s", out)
	}

	// Files, owners and modes.
	got := r.stat(t, packagedPaths()...)
	for p, want := range packaged {
		if got[p] != want {
			t.Errorf("%s: %q, want %q", p, got[p], want)
		}
	}
	if list := ownPaths(r.run(t, "dpkg", "-L", "edgemirror")); !slices.Equal(list, packagedPaths()) {
		t.Errorf("dpkg -L edgemirror:\n  %v\nwant\n  %v", list, packagedPaths())
	}
	conffiles := r.run(t, "dpkg-query", "-W", "-f", "${Conffiles}", "edgemirror")
	for _, c := range []string{"/etc/edgemirror/agent.env", "/etc/edgemirror/aggregator.env"} {
		if !strings.Contains(conffiles, c) {
			t.Errorf("%s is not a conffile: %q", c, conffiles)
		}
	}

	// The system user.
	pw := strings.Split(strings.TrimSpace(r.run(t, "getent", "passwd", "edgemirror")), ":")
	if len(pw) != 7 {
		t.Fatalf("getent passwd edgemirror: %v", pw)
	}
	if uid, _ := strconv.Atoi(pw[2]); uid == 0 || uid >= 1000 {
		t.Errorf("edgemirror has uid %d, want a system uid (1-999)", uid)
	}
	if pw[5] != "/var/lib/edgemirror" || !strings.HasSuffix(pw[6], "nologin") {
		t.Errorf("edgemirror user: home %q shell %q", pw[5], pw[6])
	}

	// Nothing enabled.
	if wants := r.run(t, "find", "/etc/systemd/system", "-name", "edgemirror*"); strings.TrimSpace(wants) != "" {
		t.Errorf("install enabled units:\n%s", wants)
	}

	// The installed binary, and --check on the packaged env files (as the
	// units' ExecStartPre does, as the service user).
	if v := r.run(t, "/usr/bin/edgemirror", "version"); !strings.Contains(v, testVersion) {
		t.Errorf("installed version: %q", v)
	}
	r.run(t, "sed", "-i", "s/^EDGEMIRROR_EDGE_ID=.*/EDGEMIRROR_EDGE_ID=gw-test-7/", "/etc/edgemirror/agent.env")
	agentEnv := envFile(t, r.run(t, "cat", "/etc/edgemirror/agent.env"))
	check := checkAs(r, "agent", agentEnv)
	if out, err := r.exec(check...); err != nil || !strings.Contains(out, "configuration valid: agent edge-id=gw-test-7") {
		t.Errorf("agent --check with the packaged env file: %v\n%s", err, out)
	}
	if out, err := r.exec(checkAs(r, "aggregator", envFile(t, r.run(t, "cat", "/etc/edgemirror/aggregator.env")))...); err != nil ||
		!strings.Contains(out, "configuration valid: aggregator") {
		t.Errorf("aggregator --check with the packaged env file: %v\n%s", err, out)
	}
	// A bad value stops the unit before it starts, with the reason.
	bad := append(slices.Clone(agentEnv), "EDGEMIRROR_BUFFER_MAX_BYTES=lots")
	if out, err := r.exec(checkAs(r, "agent", bad)...); err == nil || !strings.Contains(out, "buffer-max-bytes") {
		t.Errorf("agent --check with a bad size: err %v, output %q; want a failure naming buffer-max-bytes", err, out)
	}

	// A buffer written by the service user.
	r.run(t, "runuser", "-u", "edgemirror", "--", "sh", "-c", "echo chunks > /var/lib/edgemirror/buffer.db")

	// Upgrade in place: buffer and edited config are kept.
	r.put(t, newerDeb(t), "/edgemirror-test/edgemirror-new.deb")
	r.run(t, "dpkg", "-i", "/edgemirror-test/edgemirror-new.deb")
	if v := r.run(t, "/usr/bin/edgemirror", "version"); !strings.Contains(v, "v9.8.8") {
		t.Errorf("version after upgrade: %q", v)
	}
	if b := r.run(t, "cat", "/var/lib/edgemirror/buffer.db"); b != "chunks\n" {
		t.Errorf("buffer after upgrade: %q", b)
	}
	if env := r.run(t, "cat", "/etc/edgemirror/agent.env"); !strings.Contains(env, "EDGEMIRROR_EDGE_ID=gw-test-7") {
		t.Errorf("upgrade replaced the edited agent.env:\n%s", env)
	}
	if st := r.stat(t, "/var/lib/edgemirror")["/var/lib/edgemirror"]; st != packaged["/var/lib/edgemirror"] {
		t.Errorf("/var/lib/edgemirror after upgrade: %q", st)
	}

	// Remove: the binary goes, the buffer and the config stay.
	r.run(t, "dpkg", "-r", "edgemirror")
	if r.exists("/usr/bin/edgemirror") {
		t.Error("/usr/bin/edgemirror still there after dpkg -r")
	}
	if b, err := r.exec("cat", "/var/lib/edgemirror/buffer.db"); err != nil || b != "chunks\n" {
		t.Errorf("buffer after dpkg -r: %v %q", err, b)
	}
	if !r.exists("/etc/edgemirror/agent.env") {
		t.Error("agent.env removed by dpkg -r (only purge may)")
	}

	// Purge: buffer, state and config are deleted.
	r.run(t, "dpkg", "-P", "edgemirror")
	for _, p := range []string{"/var/lib/edgemirror", "/var/lib/edgemirror-aggregator", "/etc/edgemirror"} {
		if r.exists(p) {
			t.Errorf("%s still there after dpkg -P", p)
		}
	}

	// The machine itself was not touched.
	if !hostHadUser && hostHas("getent", "passwd", "edgemirror") {
		t.Error("the test created the edgemirror user on the machine itself")
	}
}

func hostHas(name string, args ...string) bool {
	_, err := runErr(name, args...)
	return err == nil
}

// envFile parses an env file as systemd's EnvironmentFile= does for these
// simple KEY=VALUE lines.
func envFile(t *testing.T, text string) []string {
	t.Helper()
	var kv []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if !strings.Contains(line, "=") {
			t.Fatalf("env file line %q is not KEY=VALUE", line)
		}
		kv = append(kv, line)
	}
	return kv
}

// checkAs is the command line of `edgemirror <cmd> --check` run as the
// service user with exactly env.
func checkAs(r *sysroot, cmd string, env []string) []string {
	args := []string{"runuser", "-u", "edgemirror", "--", "env", "-i"}
	args = append(args, env...)
	return append(args, "/usr/bin/edgemirror", cmd, "--check")
}

// TestRPMContents: each .rpm holds the same files as the .deb, with the
// same owners and modes, the env files as config files kept on upgrade,
// the right architecture and the scriptlets that create the user.
func TestRPMContents(t *testing.T) {
	rpm := tool(t, "rpm", "rpm")
	for _, arch := range []string{"amd64", "arm64", "armv7"} {
		f := rpmFile(t, arch)
		if list := ownPaths(run(t, rpm, "-qlp", f)); !slices.Equal(list, packagedPaths()) {
			t.Errorf("rpm -qlp %s:\n  %v\nwant\n  %v", filepath.Base(f), list, packagedPaths())
		}
		if a := run(t, rpm, "-qp", "--qf", "%{ARCH}", f); a != rpmArch[arch] {
			t.Errorf("%s: arch %q, want %q", filepath.Base(f), a, rpmArch[arch])
		}
		meta := run(t, rpm, "-qp", "--qf", `[%{FILENAMES}|%{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEMODES:octal} %{FILEFLAGS:fflags}\n]`, f)
		for _, line := range strings.Split(strings.TrimSpace(meta), "\n") {
			name, v, _ := strings.Cut(line, "|")
			want, ok := packaged[name]
			if !ok {
				continue
			}
			fields := strings.Fields(v)
			wantFields := strings.Fields(want)
			mode := fields[1]
			if len(mode) > 3 {
				mode = mode[len(mode)-3:]
			}
			if fields[0] != wantFields[0] || mode != wantFields[1] {
				t.Errorf("%s in %s: %s %s, want %s %s", name, filepath.Base(f), fields[0], mode, wantFields[0], wantFields[1])
			}
			isConfig := len(fields) > 2 && strings.Contains(fields[2], "c") && strings.Contains(fields[2], "n")
			if strings.HasSuffix(name, ".env") != isConfig {
				t.Errorf("%s in %s: flags %q (config noreplace only for the env files)", name, filepath.Base(f), v)
			}
		}
		if req := run(t, rpm, "-qpR", f); !strings.Contains(req, "shadow-utils") {
			t.Errorf("%s does not require shadow-utils (useradd in %%pre):\n%s", filepath.Base(f), req)
		}
		scripts := run(t, rpm, "-qp", "--scripts", f)
		for _, want := range []string{"preinstall scriptlet", "useradd --system", "postinstall scriptlet", "chmod 0700", "postuninstall scriptlet"} {
			if !strings.Contains(scripts, want) {
				t.Errorf("%s scriptlets lack %q", filepath.Base(f), want)
			}
		}
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+)`)

// TestUnitsVerifyAndSecurity: with the package installed, systemd-analyze
// verify accepts both units and systemd-analyze security rates each at most
// 2.0.
func TestUnitsVerifyAndSecurity(t *testing.T) {
	tool(t, "systemd-analyze", "systemd")
	r := newSysroot(t)
	r.put(t, debFile(t, "amd64"), "/edgemirror-test/edgemirror.deb")
	r.run(t, "dpkg", "-i", "/edgemirror-test/edgemirror.deb")
	for _, unit := range []string{"edgemirror-agent.service", "edgemirror-aggregator.service"} {
		path := "/usr/lib/systemd/system/" + unit
		out, err := r.exec("systemd-analyze", "verify", path)
		if err != nil || strings.Contains(out, unit) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
		out = r.run(t, "systemd-analyze", "security", "--offline=yes", path)
		m := exposure.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: no overall exposure in:\n%s", unit, out)
		}
		score, _ := strconv.ParseFloat(m[2], 64)
		t.Logf("systemd-analyze security %s: %.1f", unit, score)
		fmt.Printf("systemd-analyze security %s: %.1f\n", unit, score)
		if score > 2.0 {
			t.Errorf("%s: exposure %.1f, want at most 2.0:\n%s", unit, score, out)
		}
	}
}

// TestRPMInstallErase installs the amd64 .rpm with rpm into a throwaway
// root: the user and the owners and modes as with the .deb; erasing keeps
// the buffer and saves an edited env file as .rpmsave (RPM has no purge).
func TestRPMInstallErase(t *testing.T) {
	tool(t, "rpm", "rpm")
	r := newSysroot(t)
	r.put(t, rpmFile(t, "amd64"), "/edgemirror-test/edgemirror.rpm")
	r.run(t, "rpm", "--initdb")
	// --nodeps: the Debian root's rpm database knows no packages.
	r.run(t, "rpm", "-i", "--nodeps", "/edgemirror-test/edgemirror.rpm")
	got := r.stat(t, packagedPaths()...)
	for p, want := range packaged {
		if got[p] != want {
			t.Errorf("%s: %q, want %q", p, got[p], want)
		}
	}
	if v := r.run(t, "/usr/bin/edgemirror", "version"); !strings.Contains(v, testVersion) {
		t.Errorf("installed version: %q", v)
	}
	r.run(t, "runuser", "-u", "edgemirror", "--", "sh", "-c", "echo chunks > /var/lib/edgemirror/buffer.db")
	r.run(t, "sed", "-i", "s/^EDGEMIRROR_EDGE_ID=.*/EDGEMIRROR_EDGE_ID=gw-test-8/", "/etc/edgemirror/agent.env")

	r.run(t, "rpm", "-e", "edgemirror")
	if r.exists("/usr/bin/edgemirror") {
		t.Error("/usr/bin/edgemirror still there after rpm -e")
	}
	if b, err := r.exec("cat", "/var/lib/edgemirror/buffer.db"); err != nil || b != "chunks\n" {
		t.Errorf("buffer after rpm -e: %v %q", err, b)
	}
	if env, err := r.exec("cat", "/etc/edgemirror/agent.env.rpmsave"); err != nil || !strings.Contains(env, "gw-test-8") {
		t.Errorf("edited agent.env not saved as .rpmsave: %v %q", err, env)
	}
}
