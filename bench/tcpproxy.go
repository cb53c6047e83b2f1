package bench

import (
	"net"
	"sync"
)

// TCPProxy forwards TCP connections from its address to a target on
// loopback. Pause freezes the path the way a hung server or a cut link
// does, without closing anything: connections stay open, no byte moves in
// either direction, and new connections are accepted by the kernel but not
// forwarded. Resume lets the held bytes and connections through. Fault
// tests put one in front of the Kafka broker.
type TCPProxy struct {
	ln   net.Listener
	done chan struct{} // closed by Close

	mu     sync.Mutex // guards the following
	target string
	gate   chan struct{} // closed while forwarding; open (blocking) while paused
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// NewTCPProxy listens on 127.0.0.1 and forwards to target; an empty target
// is set by Listen.
func NewTCPProxy(target string) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gate := make(chan struct{})
	close(gate)
	p := &TCPProxy{ln: ln, done: make(chan struct{}), target: target, gate: gate, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Listen listens on address, makes it the proxy's target, and returns a
// listener that reports the proxy's address as its own. It is a
// kfake.ListenFn: the broker then advertises the proxy in its metadata,
// so that clients reach it through the proxy only.
func (p *TCPProxy) Listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.target = ln.Addr().String()
	p.mu.Unlock()
	return advertised{ln, p.ln.Addr()}, nil
}

type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// Pause stops forwarding; Resume starts again. Both are idempotent.
func (p *TCPProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // already paused
	}
}

func (p *TCPProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// pass blocks while the proxy is paused; false means it was closed.
func (p *TCPProxy) pass() bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		return true
	case <-p.done:
		return false
	}
}

func (p *TCPProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// track remembers c so that Close closes it; false once closed.
func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// forward carries one client connection: once the gate is open it dials
// the target, then copies both ways, each chunk waiting at the gate, until
// either side ends; then both are closed.
func (p *TCPProxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if !p.pass() {
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.copy(up, client); up.Close() }()
	go func() { defer wg.Done(); p.copy(client, up); client.Close() }()
	wg.Wait()
}

func (p *TCPProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or a side closed
		}
	}
}

// Close stops forwarding and closes every connection.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}
