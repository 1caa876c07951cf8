package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgemirror/edgemirror/agent"
	"github.com/edgemirror/edgemirror/buffer"
)

const bufferUsage = `Usage:
  edgemirror buffer status --buffer-dir DIR        show the buffer's epoch, sequence numbers and what it holds
  edgemirror buffer renew-epoch --buffer-dir DIR   give the buffer a new epoch (the agent must be stopped)

A buffer is stranded when the aggregator refuses its epoch because another
buffer of the same edge id took over (the agent logs "STRANDED BUFFER" and
reports the held ranges with reason stranded-epoch). Once the other agent is
stopped for good, renew-epoch lets this buffer ship again: its chunks get new
sequence numbers under the new epoch, and the aggregator deduplicates their
records by source offset. If the other agent is the one to keep, stop this
one and remove its buffer directory instead; the reported ranges are then
lost unless the other agent read them too.
`

// runBuffer is the offline buffer tool. The agent must not run on the
// directory (its lock makes the tool fail after a second).
func runBuffer(_ context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, bufferUsage)
		if len(args) == 0 {
			return &usageError{message: "missing buffer action", hint: "edgemirror buffer status --buffer-dir " + agent.DefaultBufferDir}
		}
		return errHelp
	}
	action := args[0]
	if action != "status" && action != "renew-epoch" {
		return &usageError{message: fmt.Sprintf("unknown buffer action %q", action), hint: "edgemirror buffer --help"}
	}
	dir := agent.DefaultBufferDir
	cmd := newCommand("buffer "+action, "Inspects or repairs an agent's buffer offline.",
		"edgemirror buffer "+action+" --buffer-dir "+agent.DefaultBufferDir)
	cmd.section("Buffer")
	cmd.str(&dir, "buffer-dir", "directory of the durable buffer (bbolt file buffer.db)")
	if err := cmd.parse(args[1:], getenv); err != nil {
		if errors.Is(err, errHelp) {
			fmt.Fprint(stdout, bufferUsage)
			cmd.usage(stdout)
		}
		return err
	}
	// MaxBytes only bounds growth; these actions add nothing.
	st, err := buffer.Open(dir, buffer.Options{MaxBytes: 1 << 40, LockTimeout: time.Second})
	if err != nil {
		if errors.Is(err, buffer.ErrLocked) {
			return fmt.Errorf("open buffer in %s: %w (stop the agent first)", dir, err)
		}
		return fmt.Errorf("open buffer in %s: %w", dir, err)
	}
	defer st.Close()
	if action == "renew-epoch" {
		old, renewed, err := st.RenewEpoch()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "buffer %s: epoch %d renewed to %d; its %d chunks are shipped under the new epoch at the next agent start\n",
			dir, old, renewed, st.Stats().Chunks)
		return nil
	}
	held, err := st.HeldRanges()
	if err != nil {
		return err
	}
	s := st.Stats()
	fmt.Fprintf(stdout, "buffer %s: epoch %d, next seq %d, lowest held seq %d, %d chunks, %d records, %d pending loss ranges\n",
		dir, st.Epoch(), st.NextSeq(), st.Floor(), s.Chunks, s.Records, s.PendingLosses)
	for _, h := range held {
		fmt.Fprintf(stdout, "  %s/%d offsets %d..%d: %d records in %d chunks\n", h.Topic, h.Partition, h.First, h.Last, h.Records, h.Chunks)
	}
	return nil
}
