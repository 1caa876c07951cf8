package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	realkafka "github.com/edgemirror/edgemirror/test/kafka"
)

// Warm-up: brokers in service compiled their code paths long ago, while a
// freshly started JVM spends its first minutes of load in the JIT
// compilers, and on this bench's 2-core machine that CPU is taken from the
// systems being measured. Measured with the compiler threads' own CPU: a
// 200,000-record lan row run first on fresh brokers lost 1-2 CPU s of the
// hub's to its compilers, about as much as the hub spent serving the row,
// and a row run first was 10-50 % slower than the same row run second
// (test/bench/README.md). So before the measured rows the first
// row's throughput run is repeated, unmeasured, until the brokers'
// compilers use less than warmUpQuiet of the brokers' CPU in one pass.
const (
	warmUpQuiet     = 0.10
	maxWarmUpPasses = 12
)

// warmBrokers runs warm-up passes of row r (its throughput run only, on
// topics of their own) until the brokers' JIT compilers are quiet or
// maxWarmUpPasses have run, and describes what it did.
func warmBrokers(ctx context.Context, e *env, m matrix, r rowSpec) (string, error) {
	brokers := []*realkafka.Cluster{e.edge, e.hub}
	var share float64
	for pass := 1; pass <= maxWarmUpPasses; pass++ {
		total0, jit0, err := brokerCPU(brokers)
		if err != nil {
			return "", err
		}
		w := r
		w.warmUp = pass
		res, _, err := runRow(ctx, e, m, w)
		if err != nil {
			return "", fmt.Errorf("%s: %w", w.name(), err)
		}
		total1, jit1, err := brokerCPU(brokers)
		if err != nil {
			return "", err
		}
		total, jit := total1-total0, jit1-jit0
		share = jit / max(total, 1e-9)
		e.logf("warm-up pass %d: %.0f rec/s; the brokers used %.2f CPU s, %.2f of it (%.0f %%) in their JIT compilers",
			pass, res.RecordsPerS, total, jit, 100*share)
		if share < warmUpQuiet {
			return fmt.Sprintf("%d passes of the throughput run of %s (%d records each), until the brokers' JIT compilers used %.0f %% of their CPU in a pass",
				pass, r.name(), r.records, 100*share), nil
		}
	}
	e.logf("warm-up: the brokers' compilers were still busy after %d passes; measuring anyway", maxWarmUpPasses)
	return fmt.Sprintf("%d passes of the throughput run of %s (%d records each); in the last the brokers' JIT compilers still used %.0f %% of their CPU",
		maxWarmUpPasses, r.name(), r.records, 100*share), nil
}

// brokerCPU returns the CPU seconds the brokers' JVMs have used, in all and
// in their JIT compiler threads (C1 and C2 CompilerThread).
func brokerCPU(brokers []*realkafka.Cluster) (total, jit float64, err error) {
	for _, c := range brokers {
		b, err := os.ReadFile(filepath.Join(c.DataDir(), "kafka.pid"))
		if err != nil {
			return 0, 0, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, 0, fmt.Errorf("%s: bad kafka.pid: %w", c.Name(), err)
		}
		t, j, err := jvmCPU(pid)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", c.Name(), err)
		}
		total, jit = total+t, jit+j
	}
	return total, jit, nil
}

// jvmCPU returns the CPU seconds of a JVM process and of its JIT compiler
// threads, from /proc.
func jvmCPU(pid int) (total, jit float64, err error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	if total, err = cpuSeconds(pid); err != nil {
		return 0, 0, err
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		comm, err := os.ReadFile(filepath.Join(dir, t.Name(), "comm"))
		if err != nil {
			continue // the thread ended
		}
		// HotSpot names them "C2 CompilerThread0" (cut to 15 bytes)
		if name := string(comm); !strings.HasPrefix(name, "C1 Compiler") && !strings.HasPrefix(name, "C2 Compiler") {
			continue
		}
		s, err := statCPU(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue
		}
		jit += s
	}
	return total, jit, nil
}
