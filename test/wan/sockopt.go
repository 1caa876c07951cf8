package wan

import "syscall"

// rcvbufControl sets the receive buffer of a listening socket, which the
// connections it accepts inherit.
func rcvbufControl(n int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = setRcvbuf(fd, n)
		}); err != nil {
			return err
		}
		return serr
	}
}
