package bench

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// UDPProxy forwards datagrams between its clients and one target on
// loopback. Pause drops every datagram both ways (a cut network); Resume
// heals it. Fault tests put one in front of a relay's QUIC address.
type UDPProxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	paused atomic.Bool

	mu    sync.Mutex // guards conns
	conns map[string]*net.UDPConn
	wg    sync.WaitGroup
}

// NewUDPProxy listens on 127.0.0.1 and forwards to target.
func NewUDPProxy(target string) (*UDPProxy, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &UDPProxy{ln: ln, target: ta, conns: map[string]*net.UDPConn{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address clients use.
func (p *UDPProxy) Addr() string { return p.ln.LocalAddr().String() }

// Pause cuts the path; Resume heals it.
func (p *UDPProxy) Pause()  { p.paused.Store(true) }
func (p *UDPProxy) Resume() { p.paused.Store(false) }

func (p *UDPProxy) serve() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		if p.paused.Load() {
			continue
		}
		up, err := p.upstream(from)
		if err != nil {
			continue
		}
		up.Write(buf[:n])
	}
}

// upstream is the socket that carries one client's datagrams to the
// target, and the target's answers back to that client.
func (p *UDPProxy) upstream(client *net.UDPAddr) (*net.UDPConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[client.String()]; ok {
		return c, nil
	}
	c, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, err
	}
	p.conns[client.String()] = c
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && !ne.Timeout() {
					return
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if !p.paused.Load() {
				p.ln.WriteToUDP(buf[:n], client)
			}
		}
	}()
	return c, nil
}

// Close stops forwarding.
func (p *UDPProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}
