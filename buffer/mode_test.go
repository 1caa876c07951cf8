package buffer

import (
	"os"
	"path/filepath"
	"testing"
)

// The buffer directory is created readable by its owner only.
func TestBufferDirCreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "buffer")
	s, err := Open(dir, Options{MaxBytes: MinMaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("buffer directory mode %#o, want 0700", m)
	}
}
