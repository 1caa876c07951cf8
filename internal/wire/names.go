package wire

import "fmt"

// ValidEdgeID reports whether s may be used as an edge id: 1 to
// MaxEdgeIDLen characters of [A-Za-z0-9._-], and not "." or "..". Edge ids
// end up in hub topic names, file names and metric labels, so the alphabet
// is deliberately small. The error wraps ErrInvalidEdgeID.
func ValidEdgeID(s string) error {
	return validName("edge id", s, MaxEdgeIDLen, ErrInvalidEdgeID)
}

// ValidTopicName reports whether s is a legal Kafka topic name: 1 to
// MaxTopicNameLen characters of [A-Za-z0-9._-], and not "." or "..". Kafka
// enforces the same rule, so every source topic passes; the decoder applies
// it so that a hostile sender cannot smuggle other bytes into names the
// receiver builds from topic names. The error wraps ErrInvalidTopic.
func ValidTopicName(s string) error {
	return validName("topic name", s, MaxTopicNameLen, ErrInvalidTopic)
}

// validName checks the shared name rule: 1 to max characters of
// [A-Za-z0-9._-], and not "." or "..". The error names what was checked and
// wraps sentinel.
func validName(what, s string, max int, sentinel error) error {
	if s == "" {
		return fmt.Errorf("check %s: empty: %w", what, sentinel)
	}
	if len(s) > max {
		return fmt.Errorf("check %s %.16q...: %d characters, at most %d allowed: %w", what, s, len(s), max, sentinel)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("check %s %q: %w", what, s, sentinel)
	}
	if i := firstBadNameByte(s); i >= 0 {
		return fmt.Errorf("check %s %q: character %q at %d is not in [A-Za-z0-9._-]: %w", what, s, s[i], i, sentinel)
	}
	return nil
}

// validNameBytes is ValidTopicName for raw bytes without building a string
// or an error; the decoder uses it on the hot path.
func validNameBytes(b []byte) bool {
	if len(b) == 0 || len(b) > MaxTopicNameLen {
		return false
	}
	if (len(b) == 1 && b[0] == '.') || (len(b) == 2 && b[0] == '.' && b[1] == '.') {
		return false
	}
	for _, c := range b {
		if !nameByte(c) {
			return false
		}
	}
	return true
}

// firstBadNameByte returns the index of the first byte of s outside
// [A-Za-z0-9._-], or -1.
func firstBadNameByte(s string) int {
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return i
		}
	}
	return -1
}

func nameByte(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
		c == '.' || c == '_' || c == '-'
}
