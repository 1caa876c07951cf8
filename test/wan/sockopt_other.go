//go:build !unix

package wan

// setRcvbuf is not supported here; the system default stays.
func setRcvbuf(uintptr, int) error { return nil }
