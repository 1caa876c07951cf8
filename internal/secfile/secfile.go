// Package secfile reads the small secret files edgemirror is configured
// with (passwords, tokens, private keys, the edges file) and says when such
// a file is readable by more than its owner.
package secfile

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// MaxBytes bounds a secret file: a password or token is a line, a key a few
// KiB, an edges file a few hundred lines.
const MaxBytes = 1 << 20

// ReadLine reads a file holding one secret (password or token) and returns
// it without surrounding white space. what names the flag in errors; the
// secret itself never appears in an error.
func ReadLine(path, what string) (string, error) {
	b, err := Read(path, what)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s: file is empty", what, path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%s %s: file holds more than one line; put only the secret in it", what, path)
	}
	return s, nil
}

// Read reads a whole secret file of at most MaxBytes.
func Read(path, what string) ([]byte, error) { return ReadLimit(path, what, MaxBytes) }

// ReadLimit reads a whole secret file of at most max bytes.
func ReadLimit(path, what string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s %s: %d bytes is larger than %d", what, path, st.Size(), max)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return b, nil
}

// LooseMode reports the mode of path when group or others may read (or
// write) it; ok is false for a file only its owner can use, or one that
// cannot be stat'ed (the reader reports that).
func LooseMode(path string) (mode fs.FileMode, loose bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	m := st.Mode().Perm()
	return m, m&0o077 != 0
}
