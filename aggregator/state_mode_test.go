package aggregator

import (
	"os"
	"path/filepath"
	"testing"
)

// The state directory is created readable by its owner only.
func TestStateDirCreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "state")
	st, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("state directory mode %#o, want 0700", m)
	}
}
