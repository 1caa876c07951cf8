package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
)

// listenEnv makes the test binary, run again as a child, a process that
// serves /healthz on the address it names, or exits as a daemon does when
// it cannot bind it.
const listenEnv = "EDGEMIRROR_BENCH_TEST_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(listenEnv); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			os.Stderr.WriteString("listen on --metrics-addr " + addr + ": " + err.Error() + "\n")
			os.Exit(1)
		}
		_ = http.Serve(l, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestStartListeningRetriesTakenPort: a process whose port was taken
// between the pick and its bind is started again on another port; any
// other start-up failure is reported at once, not retried.
func TestStartListeningRetriesTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenAddr := taken.Addr().String()
	e := &env{logf: t.Logf}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The child finds its address in the environment, which startProc
	// passes on from ours: the build function sets it before each start.
	var tried []string
	p, err := startListening(context.Background(), e, t.TempDir(), "child", self, 1, func(ports []int) ([]string, string) {
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		bind := addr
		if len(tried) == 0 {
			bind = takenAddr // as if another process had taken the picked port
		}
		tried = append(tried, bind)
		t.Setenv(listenEnv, bind)
		return []string{"-test.run=^$"}, "http://" + addr + "/healthz"
	})
	if err != nil {
		t.Fatalf("start: %v (tried %v)", err, tried)
	}
	defer p.stop(0)
	if len(tried) != 2 || tried[1] == takenAddr {
		t.Fatalf("tried %v: want the taken address, then one other", tried)
	}

	// Not a port conflict: no retry.
	tried = nil
	_, err = startListening(context.Background(), e, t.TempDir(), "child", self, 1, func(ports []int) ([]string, string) {
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		tried = append(tried, addr)
		t.Setenv(listenEnv, "no-such-host-form")
		return []string{"-test.run=^$"}, "http://" + addr + "/healthz"
	})
	if err == nil || !strings.Contains(err.Error(), "exited during start-up") || len(tried) != 1 {
		t.Fatalf("err %v after %d starts: want one start and its exit", err, len(tried))
	}
}
