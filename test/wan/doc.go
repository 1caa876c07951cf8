// Package wan emulates a slow, high-latency, breakable network link for tests
// and benchmarks, as a userspace TCP proxy: no kernel queueing discipline, no
// privileges, one process.
//
// # Basics
//
// A Proxy listens on one address and forwards every connection to one target.
// Each direction of the link (Up: client→target, Down: target→client) has a
// rate cap and adds a one-way delay of RTT/2, so a small request and its
// response take one RTT longer than without the proxy:
//
//	p, err := wan.New(wan.Config{Target: hub, Link: wan.WAN})
//	go p.Run(ctx)            // or in an errgroup; Close or ctx stops it
//	... dial p.Addr() instead of hub ...
//	p.Cut(); p.Restore()     // take the link down and bring it back
//	p.Stats().Up             // bytes delivered client→target
//	p.BusiestWindow(2*time.Second)
//
// New binds the listener and starts nothing; Run owns every goroutine and
// returns only after all of them have ended. Close (safe to call twice, and
// before Run) stops Run and waits for it.
//
// # Model
//
// For each connection and direction a reader goroutine reads the sender's
// bytes in pieces of at most 10 ms worth of the rate (512 B to 16 KiB; 32 KiB on
// an unlimited link). Each piece reserves its bytes from a token bucket shared by
// all connections of that direction, so the cap belongs to the link, not to a
// connection. The bucket holds at most 10 ms worth of bytes (at least one
// piece): after an idle period at most that much leaves at once, so the rate
// holds over any window longer than a few tens of milliseconds. The reader waits
// for its reservation before reading again: that is the bottleneck, and while it
// is busy the sender's bytes wait in the sockets in front of it and the sender's
// writes block, as they would behind a real bottleneck.
//
// A piece leaves the bottleneck at its reservation time and is due at the far
// end RTT/2 later; a writer goroutine delivers the pieces in order when they are
// due. The bytes in this second stage are the bytes "on the wire", at most about
// rate × RTT/2. They are bounded per connection and direction by the
// bandwidth-delay product plus 64 KiB (4 MiB on an unlimited link), which only
// matters when the receiver stops reading: then the writer blocks, the bound is
// reached, the reader stops, and the sender is held back end to end.
//
// The order (serialise at the rate, then propagate) is the physics of a link:
// a piece of n bytes on an idle link arrives after RTT/2 (plus n/rate only
// beyond the burst), and under load throughput is the rate and the queueing is
// in the sender's and the proxy's kernel buffers.
//
// A half-close is forwarded once everything before it was delivered, so
// request/response protocols that use it work. Any error on one side (a reset,
// a failed write) resets both sides.
//
// # Cut and Restore
//
// Cut models a link that dies behind NAT and loses its state, but fails fast
// instead of silently: every open connection is reset (TCP RST) on both the
// client and the target side, the bytes in flight are lost, and while the link
// is down every new connection is accepted and reset at once (the kernel
// completes the handshake before the proxy can refuse, so a client sees
// "connection reset by peer" from connect or from its first read or write, and
// EOF from any call after the one that saw the reset). No bytes cross while
// down. Restore lets new connections through again; connections broken by Cut
// stay broken, as after a NAT rebinding. A silent black hole (bytes vanish,
// peers wait for timeouts) is not emulated; use a read deadline in the test
// to mean "timeout".
//
// # Counting
//
// Stats.Up and Stats.Down count bytes as the proxy hands them to the receiving
// socket, exactly, so after a clean transfer they equal what the receiver read.
// BusiestWindow keeps a 10 ms-resolution series (the last hour) of bytes
// crossing the bottleneck Up, so a benchmark can check that a sender never
// exceeded a bandwidth over any window: give the proxy a faster link than the
// sender's limit and BusiestWindow measures the sender's own pacing.
//
// # Caveats
//
// Accuracy, measured by this package's tests with the race detector on a
// shared 2-core host: over 3 s at 1 MB/s the achieved rate is within +0.3 %
// (down to -2 % while the host ran at load 30), for one connection or four
// sharing the link; a small round trip takes RTT + 0.5 to 4 ms. The emulation
// is only as punctual as the host: a process starved of CPU delivers late
// (Stats.Late says by how much) and, when a wake-up is later than the 10 ms
// burst, loses link time. Timing tests should check Stats.Late or the host's
// scheduling lag before blaming the code under test.
//
// The proxy cannot see or limit the sender's own kernel send buffer. Linux grows
// it up to net.ipv4.tcp_wmem's maximum (4 MiB by default) on loopback, so a bulk
// sender's first megabytes are accepted by write at once and then sit in front
// of the bottleneck (at 1 Mbit/s, half a minute of queue); over a real WAN the
// congestion window would keep it nearer the bandwidth-delay product. A sender
// that must feel the cap from its first writes should set a small write buffer
// (net.TCPConn.SetWriteBuffer). Even then the two kernels hold a few hundred
// KiB in front of the bottleneck (measured: 245 KB with a 64 KiB send buffer),
// which at low rates is seconds of queueing delay behind a bulk transfer.
// Applications with their own flow control (HTTP/2 windows) are less affected.
//
// Connection set-up costs no RTT: the proxy's kernel completes the TCP
// handshake locally. Everything after it, including a TLS handshake, is delayed.
//
// There is no packet loss, reordering, jitter or MTU: the proxy works on a
// byte stream and TCP above it sees a clean, slow, distant pipe. A cut is the
// only failure.
//
// The presets LAN, WAN and Cell are package variables for readability; treat
// them as constants.
package wan
