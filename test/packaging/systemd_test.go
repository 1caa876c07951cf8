package packaging

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgemirror/edgemirror/internal/testkit"
	"github.com/edgemirror/edgemirror/test/internal/harness"
)

// bootScript boots a sysroot's overlay with systemd as its init, in a
// systemd-nspawn container that shares this machine's network (so the
// units reach the in-process clusters on 127.0.0.1) and nothing else.
const bootScript = `set -e
R="$1"
mount -t overlay overlay -o lowerdir=/,upperdir="$R/upper",workdir="$R/work" "$R/root"
# systemd-nspawn keeps locks and mount propagation under /run: a tmpfs of
# this mount namespace, so nothing is left on the machine.
mount -t tmpfs tmpfs /run
exec timeout --foreground -k 10 240 systemd-nspawn -q -D "$R/root" --register=no --keep-unit --link-journal=no \
  --setenv=SYSTEMD_COLORS=0 --setenv=COLUMNS=300 --boot systemd.unit=edgemirror-test.target`

// testTarget is what the container boots into instead of multi-user.target:
// the basic system and the two units, and none of the machine's other
// services (they would share its network).
const testTarget = `[Unit]
Description=edgemirror package test
Requires=basic.target
After=basic.target
Wants=edgemirror-agent.service edgemirror-aggregator.service
AllowIsolate=yes
`

// TestUnitsStartUnderSystemd installs the .deb into a throwaway root,
// enables both units with env files pointing at in-process edge and hub
// clusters, and boots the root with systemd (systemd-nspawn, into a target
// with just the basic system and the two units): the hardened
// units start (ExecStartPre --check included), the agent ships records
// through the aggregator to the hub exactly once, an upgrade to a newer
// release restarts both on the new binary and the agent carries on from its
// buffer, and both run as edgemirror and write their state directories.
func TestUnitsStartUnderSystemd(t *testing.T) {
	r := newSysroot(t)
	tool(t, "systemd-nspawn", "systemd-container")
	r.put(t, debFile(t, "amd64"), "/edgemirror-test/edgemirror.deb")
	r.run(t, "dpkg", "-i", "/edgemirror-test/edgemirror.deb")
	r.run(t, "systemctl", "enable", "edgemirror-agent.service", "edgemirror-aggregator.service")
	r.put(t, newerDeb(t), "/edgemirror-test/edgemirror-new.deb")

	edge := testkit.Cluster(t).ListenAddrs()
	hub := testkit.Cluster(t).ListenAddrs()
	port := func() string { return "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)) }
	aggAddr, aggMetrics, agentMetrics := port(), port(), port()
	const edgeID = "gw-systemd"
	r.setEnv(t, "/etc/edgemirror/agent.env", map[string]string{
		"EDGEMIRROR_EDGE_ID": edgeID, "EDGEMIRROR_BROKERS": strings.Join(edge, ","),
		"EDGEMIRROR_AGGREGATOR": "http://" + aggAddr, "EDGEMIRROR_METRICS_ADDR": agentMetrics,
		"EDGEMIRROR_LINGER": "200ms", "EDGEMIRROR_METADATA_INTERVAL": "1s", "EDGEMIRROR_MAX_BACKOFF": "1s",
	})
	r.setEnv(t, "/etc/edgemirror/aggregator.env", map[string]string{
		"EDGEMIRROR_LISTEN": aggAddr, "EDGEMIRROR_BROKERS": strings.Join(hub, ","),
		"EDGEMIRROR_METRICS_ADDR": aggMetrics, "EDGEMIRROR_SETTLE_TIME": "500ms",
	})
	if err := os.WriteFile(filepath.Join(r.dir, "upper", "etc", "systemd", "system", "edgemirror-test.target"), []byte(testTarget), 0o644); err != nil {
		t.Fatal(err)
	}
	// A persistent journal, read after the power-off.
	if err := os.MkdirAll(filepath.Join(r.dir, "upper", "var", "log", "journal"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A machine id of its own (an empty file: systemd makes a transient one).
	if err := os.WriteFile(filepath.Join(r.dir, "upper", "etc", "machine-id"), nil, 0o444); err != nil {
		t.Fatal(err)
	}

	prod, err := harness.NewProducer(edge)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx := t.Context()
	if err := prod.CreateTopic(ctx, "sensors", 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := prod.Produce(ctx, "sensors", 3, 100); err != nil {
		t.Fatal(err)
	}

	console := filepath.Join(t.TempDir(), "console.log")
	out, err := os.Create(console)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	boot := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", bootScript, "sh", r.dir)
	boot.Stdout, boot.Stderr = out, out
	boot.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := boot.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- boot.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		// unshare and sh exec timeout, which passes one SIGTERM on to
		// systemd-nspawn: that powers the container off in order (a second
		// SIGTERM would cut it short, so the group is not signalled).
		_ = boot.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-boot.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Error("the container did not power off within 60s of SIGTERM")
		}
	}
	defer stop()
	consoleText := func() string { b, _ := os.ReadFile(console); return string(b) }
	journal := func() string {
		o, _ := runErr("journalctl", "-D", filepath.Join(r.dir, "upper", "var", "log", "journal"), "-o", "short-monotonic",
			"-u", "edgemirror-agent.service", "-u", "edgemirror-aggregator.service", "--no-pager")
		return o
	}

	testkit.Eventually(t, 3*time.Minute, "300 records acknowledged by the agent under systemd", func() error {
		select {
		case err := <-exited:
			exited <- err
			if !strings.Contains(consoleText(), "Welcome to") {
				t.Skipf("SKIP: systemd-nspawn cannot boot a container on this machine (%v):\n%s", err, tail([]byte(consoleText()), 20))
			}
			return fmt.Errorf("the container stopped (%v):\n%s", err, tail([]byte(consoleText()), 40))
		default:
		}
		m, err := harness.Scrape(ctx, agentMetrics)
		if err != nil {
			return err
		}
		if got := m["edgemirror_agent_records_acked_total"]; got < 300 {
			return fmt.Errorf("%v acknowledged", got)
		}
		return nil
	})
	hubTopic := func(t string) string { return edgeID + "." + t }
	if err := harness.Check(ctx, hub, edgeID, prod.Out, nil, hubTopic); err != nil {
		t.Fatal(err)
	}

	// Upgrade in place while both units run: the package restarts them on
	// the new binary and the agent carries on from its buffer.
	initPID, err := containerInit(boot.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("nsenter", "-t", strconv.Itoa(initPID), "-m", "-u", "-i", "-p", "--",
		"dpkg", "-i", "/edgemirror-test/edgemirror-new.deb"); err != nil {
		t.Fatalf("dpkg -i of the newer release inside the running container: %v\n%s", err, out)
	}
	testkit.Eventually(t, time.Minute, "agent and aggregator running v9.8.8", func() error {
		for _, addr := range []string{agentMetrics, aggMetrics} {
			if m, err := scrapeText(ctx, addr); err != nil || !strings.Contains(m, `version="v9.8.8"`) {
				return fmt.Errorf("%s: not v9.8.8 yet (%v)", addr, err)
			}
		}
		return nil
	})
	// The sandbox leaves what the health checks read readable (the process
	// start time comes from /proc/stat).
	if m, err := scrapeText(ctx, agentMetrics); err != nil {
		t.Error(err)
	} else {
		for _, name := range []string{"process_resident_memory_bytes", "process_start_time_seconds", "edgemirror_buffer_used_bytes", "edgemirror_agent_link_up"} {
			if !strings.Contains(m, "\n"+name+" ") {
				t.Errorf("the agent's metrics under the sandbox lack %s", name)
			}
		}
	}
	if err := prod.Produce(ctx, "sensors", 3, 100); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Minute, "600 records in the hub", func() error {
		n, err := harness.CountAll(ctx, hub, hubTopic("sensors"))
		if err != nil || n < 600 {
			return fmt.Errorf("%d records (%v)", n, err)
		}
		return nil
	})
	if err := harness.Check(ctx, hub, edgeID, prod.Out, nil, hubTopic); err != nil {
		t.Fatal(err)
	}
	stop()

	// The journal the container kept: each unit started twice (at boot and
	// on the upgrade; ExecStartPre --check passed both times), was never
	// restarted by Restart=, and stopped cleanly both times (SIGTERM, exit 0
	// within TimeoutStopSec).
	log := journal()
	for _, unit := range []string{"edgemirror-agent.service", "edgemirror-aggregator.service"} {
		for _, want := range []string{"Started " + unit, unit + ": Deactivated successfully"} {
			if strings.Count(log, want) != 2 {
				t.Errorf("journal has %q %d times, want twice", want, strings.Count(log, want))
			}
		}
		for _, bad := range []string{unit + ": Scheduled restart job", unit + ": Failed with result", unit + ": Main process exited"} {
			if strings.Contains(log, bad) {
				t.Errorf("journal has %q", bad)
			}
		}
	}
	// Both ran as edgemirror and wrote into their state directories.
	uid := r.run(t, "id", "-u", "edgemirror")
	for _, f := range []string{"/var/lib/edgemirror/buffer.db"} {
		st := r.stat(t, f)[f]
		if st != "edgemirror:edgemirror 600 regular file" {
			t.Errorf("%s: %q, want edgemirror:edgemirror 600 (uid %s)", f, st, strings.TrimSpace(uid))
		}
	}
	if ls := r.run(t, "ls", "-A", "/var/lib/edgemirror-aggregator"); strings.TrimSpace(ls) == "" {
		t.Error("the aggregator wrote nothing into its state directory")
	}
	if t.Failed() {
		t.Logf("journal of the units:\n%s", tail([]byte(log), 60))
		t.Logf("console:\n%s", tail([]byte(ansi.ReplaceAllString(consoleText(), "")), 60))
	}
}

// containerInit returns the host PID of the init (PID 1 of its own PID
// namespace) that descends from the process ancestor.
func containerInit(ancestor int) (int, error) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		var nspid []string
		ppid := 0
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if len(nspid) < 2 || nspid[len(nspid)-1] != "1" {
			continue
		}
		for p, hops := ppid, 0; p > 1 && hops < 10; hops++ {
			if p == ancestor {
				return pid, nil
			}
			p = parentOf(p)
		}
	}
	return 0, fmt.Errorf("no container init below process %d", ancestor)
}

func parentOf(pid int) int {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			p, _ := strconv.Atoi(strings.TrimSpace(v))
			return p
		}
	}
	return 0
}

// scrapeText returns the Prometheus text a metrics endpoint serves.
func scrapeText(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// setEnv rewrites KEY=VALUE lines of the env file at path inside the root,
// appending the keys it does not have.
func (r *sysroot) setEnv(t *testing.T, path string, kv map[string]string) {
	t.Helper()
	text := r.run(t, "cat", path)
	var lines []string
	done := map[string]bool{}
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			if v, set := kv[k]; set {
				line, done[k] = k+"="+v, true
			}
		}
		lines = append(lines, line)
	}
	for k, v := range kv {
		if !done[k] {
			lines = append(lines, k+"="+v)
		}
	}
	p := filepath.Join(r.dir, "upper", path)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}
