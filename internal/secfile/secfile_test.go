package secfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := ReadLine(write("ok", "  s3cret\n", 0o600), "--token-file"); err != nil || s != "s3cret" {
		t.Errorf("got %q, %v", s, err)
	}
	for name, tc := range map[string]struct{ path, want string }{
		"empty":     {write("empty", " \n", 0o600), "file is empty"},
		"two lines": {write("two", "a\nb\n", 0o600), "more than one line"},
		"missing":   {filepath.Join(dir, "nope"), "no such file"},
		"directory": {dir, "not a regular file"},
		"too large": {write("big", strings.Repeat("x", MaxBytes+1), 0o600), "larger than"},
	} {
		_, err := ReadLine(tc.path, "--token-file")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--token-file") {
			t.Errorf("%s: %v, want an error naming the flag and %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "xxxxxxxx") {
			t.Errorf("%s: error shows the content", name)
		}
	}
	if _, loose := LooseMode(write("private", "x", 0o600)); loose {
		t.Error("0600 reported loose")
	}
	if m, loose := LooseMode(write("open", "x", 0o600)); loose {
		t.Errorf("0600 reported loose (%#o)", m)
	}
	p := write("group", "x", 0o600)
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if m, loose := LooseMode(p); !loose || m != 0o640 {
		t.Errorf("0640: loose %v mode %#o", loose, m)
	}
}
