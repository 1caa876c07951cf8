package harness

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Balancer is a TCP load balancer in front of several backends, as an edge
// sees one aggregator address in front of many: every connection goes to
// the current backend; Switch moves new connections to another one and
// cuts the open ones, as a balancer failing over or rebalancing does.
type Balancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	current  int
	conns    map[net.Conn]struct{}
	switches int
	wg       sync.WaitGroup
}

// StartBalancer listens on 127.0.0.1 and forwards to backends[0] first.
// It is closed when the test ends.
func StartBalancer(t testing.TB, backends ...string) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Balancer{ln: ln, backends: backends, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.Close)
	return b
}

// Addr is the address the agent connects to.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Current returns the index of the backend new connections go to.
func (b *Balancer) Current() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current
}

// Switches returns how many times Switch moved the traffic.
func (b *Balancer) Switches() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.switches
}

// Switch sends new connections to backend i and closes every open one.
func (b *Balancer) Switch(i int) {
	b.mu.Lock()
	b.current = i
	b.switches++
	conns := b.conns
	b.conns = make(map[net.Conn]struct{})
	b.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Close stops accepting and closes every connection.
func (b *Balancer) Close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *Balancer) accept() {
	defer b.wg.Done()
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		target := b.backends[b.current]
		b.mu.Unlock()
		out, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", target)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns[in], b.conns[out] = struct{}{}, struct{}{}
		b.mu.Unlock()
		b.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer b.wg.Done()
			_, err := io.Copy(dst, src)
			if err == nil || errors.Is(err, net.ErrClosed) {
				err = nil
			}
			dst.Close()
			src.Close()
			b.mu.Lock()
			delete(b.conns, dst)
			delete(b.conns, src)
			b.mu.Unlock()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}
