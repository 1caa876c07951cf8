package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestCheckCommitted: a count that reached its target while a partition's
// last record was still above the last stable offset (transaction markers
// counted as records) is an error; one past every last record is not.
func TestCheckCommitted(t *testing.T) {
	last := map[int32]int64{0: 99, 1: 41, 2: 7}
	cases := []struct {
		name   string
		stable map[int32]int64
		early  int32 // partition named in the error, -1 for none
	}{
		{"all past their last record", map[int32]int64{0: 101, 1: 43, 2: 9}, -1},
		{"exactly one past", map[int32]int64{0: 100, 1: 42, 2: 8}, -1},
		{"last record not committed", map[int32]int64{0: 101, 1: 41, 2: 9}, 1},
		{"partition missing", map[int32]int64{0: 101, 1: 43}, 2},
	}
	for _, c := range cases {
		err := checkCommitted("t", c.stable, last)
		switch {
		case c.early < 0 && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.early >= 0 && err == nil:
			t.Errorf("%s: no error", c.name)
		case c.early >= 0 && !strings.Contains(err.Error(), fmt.Sprintf("partition %d's", c.early)):
			t.Errorf("%s: error names the wrong partition: %v", c.name, err)
		}
	}
}
