package agent

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpBytesAcked returns how many bytes the peer of a TCP connection has
// acknowledged: the bytes that really crossed the link, not the ones queued
// in socket buffers in front of it.
func tcpBytesAcked(c net.Conn) (uint64, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var (
		acked uint64
		gerr  error
	)
	if err := rc.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if gerr == nil {
			acked = info.Bytes_acked
		}
	}); err != nil || gerr != nil {
		return 0, false
	}
	return acked, true
}
