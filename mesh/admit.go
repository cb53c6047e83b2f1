package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
)

// A receiving endpoint is shared by every peer, so each of its resources
// is divided so that no peer, registered or not, can take all of it:
//
//   - New connections, per source address: a token bucket (ConnRate,
//     ConnBurst). An address that has spent half its burst must first prove
//     it owns the address with a QUIC Retry, which a spoofed flood cannot
//     answer; one that has spent all of it is refused before any TLS work.
//   - Connections, per authenticated relay: MaxConnsPerPeer; one more is
//     closed with connTooMany after its handshake.
//   - Streams, per relay over all its connections: MaxStreamsPerPeer
//     served at once; QUIC flow control holds the rest at the sender.
//   - Time: each batch frame must arrive within FrameReadTimeout of its
//     stream being accepted, or the stream is reset (a slow-loris peer).
//   - Processing slots: MaxConcurrentBatches in all, at most
//     MaxBatchesPerPeer per relay, handed out round-robin among the relays
//     waiting, so a relay whose batches are slow (strict anchors, a slow
//     chain) delays only itself. A slot is taken after the frame is read:
//     a peer that trickles bytes holds a stream of its own quota, never a
//     slot that others need.

// admission decides on new connections by source address, before the
// handshake: Transport.VerifySourceAddress and Transport.ConnContext.
type admission struct {
	limit rate.Limit
	burst int
	max   int // addresses tracked at most
	m     *metrics

	mu    sync.Mutex
	addrs map[netip.Addr]*rate.Limiter
}

// maxTrackedAddrs bounds the admission table. Past half of it, any new
// address must pass a Retry first, so only addresses that answered one
// (not spoofed) can fill the rest.
const maxTrackedAddrs = 4096

// errConnRate refuses a connection attempt from an address that opened
// too many lately; errAdmissionFull one that would need a new entry in a
// full admission table.
var (
	errConnRate      = errors.New("too many new connections from this address")
	errAdmissionFull = errors.New("admission table full")
)

func newAdmission(perSecond float64, burst int, m *metrics) *admission {
	return &admission{limit: rate.Limit(perSecond), burst: burst, max: maxTrackedAddrs, m: m, addrs: make(map[netip.Addr]*rate.Limiter)}
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	if u, ok := a.(*net.UDPAddr); ok {
		ip, ok := netip.AddrFromSlice(u.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// verifySource reports whether an attempt from addr (not yet validated:
// it may be spoofed) must prove its address with a Retry first.
func (a *admission) verifySource(addr net.Addr) bool {
	ip, ok := addrOf(addr)
	if !ok {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.addrs[ip]
	if l == nil {
		return len(a.addrs) >= a.max/2
	}
	return l.Tokens() < float64(a.burst)/2
}

// connContext takes a token from the attempt's address, or refuses it;
// quic-go then answers CONNECTION_REFUSED without a handshake.
func (a *admission) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	if ci.AddrVerified {
		a.m.addrValidations.Inc()
	}
	ip, ok := addrOf(ci.RemoteAddr)
	if !ok {
		a.m.connsRefused.WithLabelValues("bad_address").Inc()
		return ctx, fmt.Errorf("mesh: no IP address in %v", ci.RemoteAddr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.addrs[ip]
	if l == nil {
		if len(a.addrs) >= a.max {
			a.sweep()
		}
		if len(a.addrs) >= a.max {
			a.m.connsRefused.WithLabelValues("admission_full").Inc()
			return ctx, errAdmissionFull
		}
		l = rate.NewLimiter(a.limit, a.burst)
		a.addrs[ip] = l
	}
	if !l.Allow() {
		a.m.connsRefused.WithLabelValues("conn_rate").Inc()
		return ctx, fmt.Errorf("%w: %s", errConnRate, ip)
	}
	return ctx, nil
}

// sweep forgets the addresses whose buckets are full again: they are the
// same as addresses never seen.
func (a *admission) sweep() {
	for ip, l := range a.addrs {
		if l.Tokens() >= float64(a.burst) {
			delete(a.addrs, ip)
		}
	}
}

// QUIC connection close codes of a receiving endpoint's admission.
const (
	connTooMany quic.ApplicationErrorCode = 0x2 // the peer has MaxConnsPerPeer connections already
	connRevoked quic.ApplicationErrorCode = 0x3 // the peer's relay no longer authenticates (revoked, expelled, rotated)
)

// inbound is the receiving side's state per authenticated peer relay.
type inbound struct {
	maxConns, maxStreams int

	mu    sync.Mutex
	peers map[string]*inPeer
}

type inPeer struct {
	conns   map[*quic.Conn]struct{}
	streams chan struct{} // one token per stream being served
}

// takeStream waits for one of p's stream tokens; it fails when ctx ends
// or conn closes first.
func (p *inPeer) takeStream(ctx context.Context, conn *quic.Conn) error {
	select {
	case p.streams <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	}
}

// add registers conn as peerID's, or reports false when peerID has
// maxConns already.
func (in *inbound) add(peerID string, conn *quic.Conn) (*inPeer, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	p := in.peers[peerID]
	if p == nil {
		p = &inPeer{conns: make(map[*quic.Conn]struct{}), streams: make(chan struct{}, in.maxStreams)}
		in.peers[peerID] = p
	}
	if len(p.conns) >= in.maxConns {
		return nil, false
	}
	p.conns[conn] = struct{}{}
	return p, true
}

func (in *inbound) remove(peerID string, conn *quic.Conn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	p := in.peers[peerID]
	if p == nil {
		return
	}
	delete(p.conns, conn)
	if len(p.conns) == 0 && len(p.streams) == 0 {
		delete(in.peers, peerID)
	}
}

// conns returns every inbound connection by peer.
func (in *inbound) conns() map[string][]*quic.Conn {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string][]*quic.Conn, len(in.peers))
	for id, p := range in.peers {
		for c := range p.conns {
			out[id] = append(out[id], c)
		}
	}
	return out
}

// fairSlots hands out processing slots: free in all, at most perPeer to
// one peer, and when slots are scarce, to the waiting peers in turn.
type fairSlots struct {
	perPeer int

	mu      sync.Mutex
	free    int
	held    map[string]int
	waiting map[string][]chan struct{} // FIFO per peer
	ring    []string                   // peers with waiters, in turn order
}

func newFairSlots(total, perPeer int) *fairSlots {
	return &fairSlots{perPeer: perPeer, free: total, held: make(map[string]int), waiting: make(map[string][]chan struct{})}
}

// acquire waits for a slot for peer; release gives it back.
func (f *fairSlots) acquire(ctx context.Context, peer string) (release func(), err error) {
	release = func() { f.release(peer) }
	f.mu.Lock()
	if f.free > 0 && f.held[peer] < f.perPeer && len(f.ring) == 0 {
		f.free--
		f.held[peer]++
		f.mu.Unlock()
		return release, nil
	}
	ch := make(chan struct{})
	if len(f.waiting[peer]) == 0 {
		f.ring = append(f.ring, peer)
	}
	f.waiting[peer] = append(f.waiting[peer], ch)
	f.dispatch()
	f.mu.Unlock()

	select {
	case <-ch:
		return release, nil
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		select {
		case <-ch: // granted meanwhile: hand it on
			f.held[peer]--
			f.free++
			f.dispatch()
		default:
			f.unwait(peer, ch)
		}
		return nil, context.Cause(ctx)
	}
}

func (f *fairSlots) release(peer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[peer]--
	if f.held[peer] == 0 {
		delete(f.held, peer)
	}
	f.free++
	f.dispatch()
}

// dispatch grants free slots to waiters, one per peer in ring order;
// a peer served goes to the back of the ring.
func (f *fairSlots) dispatch() {
	for f.free > 0 {
		granted := false
		for i, peer := range f.ring {
			if f.held[peer] >= f.perPeer {
				continue
			}
			q := f.waiting[peer]
			close(q[0])
			f.free--
			f.held[peer]++
			f.ring = append(f.ring[:i], f.ring[i+1:]...)
			if len(q) > 1 {
				f.waiting[peer] = q[1:]
				f.ring = append(f.ring, peer)
			} else {
				delete(f.waiting, peer)
			}
			granted = true
			break
		}
		if !granted {
			return
		}
	}
}

func (f *fairSlots) unwait(peer string, ch chan struct{}) {
	q := f.waiting[peer]
	for i, c := range q {
		if c == ch {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		f.waiting[peer] = q
		return
	}
	delete(f.waiting, peer)
	for i, p := range f.ring {
		if p == peer {
			f.ring = append(f.ring[:i], f.ring[i+1:]...)
			break
		}
	}
}

// Revalidate authenticates every connection again against the registry as
// it is now, and closes those that no longer pass: a relay whose service
// was revoked, whose account or org is no longer active, or whose
// registered certificate changed. Inbound ones are closed with
// connRevoked, which their dialler reports as ErrAuthRefused; outbound
// ones are dropped, and the next Send to that relay dials (and so checks)
// again. Run calls it every RevalidateInterval; the relay also calls it
// after each governance refresh, so that a revocation takes effect from
// the block it commits in. It returns how many connections it closed.
func (e *Endpoint) Revalidate() int {
	closed := 0
	for id, conns := range e.in.conns() {
		for _, c := range conns {
			if _, err := e.authenticate(c.ConnectionState().TLS, x509.ExtKeyUsageClientAuth, id); err != nil {
				e.m.connsRevoked.Inc()
				e.log.Warn("closing a connection that no longer authenticates", "peer", id, "reason", Reason(err), "err", err)
				c.CloseWithError(connRevoked, Reason(err))
				closed++
			}
		}
	}
	e.mu.Lock()
	peers := make([]*peer, 0, len(e.peers))
	for _, p := range e.peers {
		peers = append(peers, p)
	}
	e.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		conn := p.conn
		p.mu.Unlock()
		if conn == nil {
			continue
		}
		if _, err := e.authenticate(conn.ConnectionState().TLS, x509.ExtKeyUsageServerAuth, p.id); err != nil {
			e.m.connsRevoked.Inc()
			e.log.Warn("dropping a connection to a relay that no longer authenticates", "peer", p.id, "reason", Reason(err), "err", err)
			p.drop(conn)
			closed++
		}
	}
	return closed
}

// revalidateEvery runs Revalidate every d until ctx ends.
func (e *Endpoint) revalidateEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.Revalidate()
		}
	}
}
