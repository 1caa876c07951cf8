package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the bench started (an agent or an aggregator).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc starts bin with args, output to dir/name.log, in its own
// process group so that a signal to the bench does not reach it first.
func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "==== %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat. It is 100
// on every Linux architecture Go runs on.
const clockTicks = 100

// cpuSeconds reads utime+stime of pid, plus the times of its waited-for
// children, from /proc/PID/stat.
func cpuSeconds(pid int) (float64, error) {
	return statCPU("/proc/" + strconv.Itoa(pid) + "/stat")
}

// statCPU reads the CPU seconds (utime, stime, cutime, cstime) of a
// /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file.
func statCPU(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// the command name (field 2) may hold spaces; fields after it are plain
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17
	if len(f) < 15 {
		return 0, fmt.Errorf("parse %s: %d fields", path, len(f))
	}
	var ticks int64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", path, err)
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
}

// peakRSS reads VmHWM (the resident set's high-water mark) of pid in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// cpuOf sums cpuSeconds over pids; a pid that is gone counts as an error.
func cpuOf(pids map[string]int) (float64, error) {
	var sum float64
	for name, pid := range pids {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		sum += s
	}
	return sum, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n different TCP ports on 127.0.0.1 that were free a
// moment ago: all of them are held until the last is found, so that the
// kernel cannot hand out one twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// rssSampler polls RssAnon and RssFile of processes and keeps the largest
// values seen: VmHWM says how high the resident set went, these say whether
// it was heap (anonymous) or mapped files (bbolt's mmap, the JVM's jars).
type rssSampler struct {
	once sync.Once
	stop chan struct{}
	done chan struct{}
	anon map[string]int64
	file map[string]int64
}

func sampleRSS(pids map[string]int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{}), anon: map[string]int64{}, file: map[string]int64{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for name, pid := range pids {
				a, f := rssParts(pid)
				s.anon[name] = max(s.anon[name], a)
				s.file[name] = max(s.file[name], f)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the peaks.
func (s *rssSampler) finish() (anon, file map[string]int64) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.anon, s.file
}

func rssParts(pid int) (anon, file int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"RssAnon:", "RssFile:"} {
			if rest, ok := strings.CutPrefix(line, k); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					if k == "RssAnon:" {
						anon = kb << 10
					} else {
						file = kb << 10
					}
				}
			}
		}
	}
	return anon, file
}
