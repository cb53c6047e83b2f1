package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/ccgpmesh/ccgp/govchain"
)

// noLeaks checks, after every other cleanup of the test, that no goroutine
// started during it is left. Call it first.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// rawPeer dials ep as relay id with id's real certificate, but speaks no
// further than QUIC: the test drives streams by hand, as a hostile relay
// would. Its transport closes at cleanup.
func rawPeer(t *testing.T, n *testNet, id string) func(ctx context.Context, to *Endpoint) (*quic.Conn, error) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{n.relays[id].cert},
		NextProtos: []string{ALPN}, InsecureSkipVerify: true}
	return func(ctx context.Context, to *Endpoint) (*quic.Conn, error) {
		return tr.Dial(ctx, to.Addr().(*net.UDPAddr), conf, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	}
}

// streamCode waits for the receiver to reset str and returns the code.
func streamCode(t *testing.T, str *quic.Stream) quic.StreamErrorCode {
	t.Helper()
	_, err := str.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote {
		t.Fatalf("stream: want a reset by the receiver, got %v", err)
	}
	return se.ErrorCode
}

// connCode waits for the receiver to close conn and returns the code.
func connCode(t *testing.T, conn *quic.Conn) quic.ApplicationErrorCode {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver did not close the connection")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || !ae.Remote {
		t.Fatalf("connection: want a close by the receiver, got %v", err)
	}
	return ae.ErrorCode
}

// hostileSlowLoris (a TestHostileInputs row): a registered relay that opens its whole share of
// streams and trickles them is reset at FrameReadTimeout and counted as
// slow_peer, while another relay's batches go through meanwhile.
func hostileSlowLoris(t *testing.T) {
	noLeaks(t)
	n := newTestNet(t, "a", "b", "evil")
	n.addPipe("p1", "a", "b")
	b := n.start("b", func(c *Config) {
		c.FrameReadTimeout = 500 * time.Millisecond
		c.MaxConcurrentBatches, c.MaxBatchesPerPeer = 2, 1
	})
	a := n.start("a")
	ctx := ctxT(t, 20*time.Second)

	conn, err := rawPeer(t, n, "evil")(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var streams []*quic.Stream
	for range b.cfg.MaxStreamsPerPeer {
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write([]byte{0x01, 0x00}); err != nil { // a frame's first bytes, and no more
			t.Fatal(err)
		}
		streams = append(streams, str)
	}
	// While evil holds its streams, a's batch is served at once.
	if _, err := a.Send(ctx, "b", n.batch("a", "b", 1, n.packets("p1", 3, 64)...)); err != nil {
		t.Fatalf("an honest peer's batch while another trickles: %v", err)
	}
	for i, str := range streams {
		if code := streamCode(t, str); code != streamTimeout {
			t.Fatalf("stream %d: reset with %#x, want streamTimeout", i, code)
		}
	}
	if got := rejected(t, b, reasonSlowPeer); got != float64(len(streams)) {
		t.Fatalf("slow_peer counted %v, want %d", got, len(streams))
	}
	conn.CloseWithError(0, "")
}

// hostileConnectionsPerPeer (a TestHostileInputs row): a relay's connections beyond MaxConnsPerPeer are
// closed after their handshake with connTooMany; the first ones stay.
func hostileConnectionsPerPeer(t *testing.T) {
	noLeaks(t)
	n := newTestNet(t, "b", "evil")
	b := n.start("b", func(c *Config) { c.MaxConnsPerPeer = 2 })
	ctx := ctxT(t, 20*time.Second)
	dial := rawPeer(t, n, "evil")

	var conns []*quic.Conn
	for range 2 {
		c, err := dial(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, func() bool { return value(t, b.m.connsAccepted) == 2 })
	extra, err := dial(ctx, b)
	if err != nil {
		t.Fatal(err) // the handshake completes; the cap applies to a known relay
	}
	if code := connCode(t, extra); code != connTooMany {
		t.Fatalf("third connection closed with %#x, want connTooMany", code)
	}
	if got := value(t, b.m.connsRefused.WithLabelValues("too_many_connections")); got != 1 {
		t.Fatalf("too_many_connections = %v, want 1", got)
	}
	for i, c := range conns {
		if c.Context().Err() != nil {
			t.Fatalf("connection %d was closed: %v", i, context.Cause(c.Context()))
		}
		c.CloseWithError(0, "")
	}
}

// hostileConnectionLoop (a TestHostileInputs row): an address that opens connections in
// a loop is asked for a Retry past half its burst and refused before the
// handshake past all of it; a peer on another address is not affected.
func hostileConnectionLoop(t *testing.T) {
	noLeaks(t)
	n := newTestNet(t, "a", "b", "evil")
	n.addPipe("p1", "a", "b")
	b := n.start("b", func(c *Config) { c.ConnRate, c.ConnBurst = 0.01, 4 })
	ctx := ctxT(t, 30*time.Second)
	dial := rawPeer(t, n, "evil")

	var refused error
	for i := 0; i < 10 && refused == nil; i++ {
		c, err := dial(ctx, b)
		if err != nil {
			refused = err
			break
		}
		c.CloseWithError(0, "")
	}
	var te *quic.TransportError
	if !errors.As(refused, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("a connection loop: want CONNECTION_REFUSED, got %v", refused)
	}
	if got := value(t, b.m.connsRefused.WithLabelValues("conn_rate")); got < 1 {
		t.Fatalf("conn_rate = %v, want ≥ 1", got)
	}
	if got := value(t, b.m.addrValidations); got < 1 {
		t.Fatalf("address validations = %v: no Retry was asked before refusing", got)
	}
}

// TestAdmissionPerAddress: the admission buckets are per source address,
// so an address that loops on new connections is refused while another
// one is admitted; past half of the table, new addresses must pass a
// Retry first, and a full table refuses new addresses without forgetting
// the busy ones. (Loopback tests have one address, so this is checked on
// the table itself.)
func TestAdmissionPerAddress(t *testing.T) {
	m, err := newMetrics("b", prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := newAdmission(0.001, 3, m)
	a.max = 4
	evil := &net.UDPAddr{IP: net.ParseIP("192.0.2.66"), Port: 4000}
	admit := func(addr *net.UDPAddr) error {
		_, err := a.connContext(context.Background(), &quic.ClientInfo{RemoteAddr: addr})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := admit(evil); err != nil {
			t.Fatalf("attempt %d within the burst: %v", i, err)
		}
	}
	if err := admit(evil); !errors.Is(err, errConnRate) {
		t.Fatalf("attempt past the burst: want errConnRate, got %v", err)
	}
	if !a.verifySource(evil) {
		t.Fatal("an address with an empty bucket is not asked for a Retry")
	}
	honest := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 4000}
	if a.verifySource(honest) {
		t.Fatal("a new address is asked for a Retry while the table is nearly empty")
	}
	if err := admit(honest); err != nil {
		t.Fatalf("another address is refused: %v", err)
	}
	if !a.verifySource(&net.UDPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1}) {
		t.Fatal("a new address is not asked for a Retry with the table half full")
	}
	for _, ip := range []string{"198.51.100.1", "198.51.100.2"} {
		if err := admit(&net.UDPAddr{IP: net.ParseIP(ip), Port: 1}); err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
	}
	if err := admit(&net.UDPAddr{IP: net.ParseIP("198.51.100.3"), Port: 1}); !errors.Is(err, errAdmissionFull) {
		t.Fatalf("a new address with the table full of busy ones: want errAdmissionFull, got %v", err)
	}
	if got := value(t, m.connsRefused.WithLabelValues("conn_rate")); got != 1 {
		t.Fatalf("conn_rate = %v, want 1", got)
	}
	if got := value(t, m.connsRefused.WithLabelValues("admission_full")); got != 1 {
		t.Fatalf("admission_full = %v, want 1", got)
	}
}

// hostileRevokedPeer (a TestHostileInputs row): once the registry no longer has a
// relay's service (revoked), Revalidate closes its connection with
// connRevoked, and its next Send is refused at the handshake.
func hostileRevokedPeer(t *testing.T) {
	noLeaks(t)
	n := newTestNet(t, "a", "b")
	n.addPipe("p1", "a", "b")
	b := n.start("b", func(c *Config) { c.RevalidateInterval = time.Hour })
	a := n.start("a")
	ctx := ctxT(t, 20*time.Second)
	if _, err := a.Send(ctx, "b", n.batch("a", "b", 1, n.packets("p1", 1, 32)...)); err != nil {
		t.Fatal(err)
	}
	if got := b.Revalidate(); got != 0 {
		t.Fatalf("Revalidate closed %d connections of an authentic peer", got)
	}

	// b's view: a's fingerprint no longer matches (a rotated certificate
	// registered by update-service, or a revocation: both fail the check).
	n.reg.updateService("a", func(s *govchain.Service) { s.TlsCertSha256 = make([]byte, 32) })
	if got := b.Revalidate(); got != 1 {
		t.Fatalf("Revalidate closed %d connections, want 1", got)
	}
	_, err := a.Send(ctx, "b", n.batch("a", "b", 2, n.packets("p1", 1, 32)...))
	if !errors.Is(err, ErrAuthRefused) {
		t.Fatalf("send after revocation: want ErrAuthRefused, got %v", err)
	}
	if got := value(t, b.m.connsRevoked); got != 1 {
		t.Fatalf("connections revoked = %v, want 1", got)
	}
	if calls, _, _ := n.relays["b"].chain.counts(); calls != 1 {
		t.Fatalf("the destination chain was called %d times, want 1 (the batch before revocation)", calls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFairSlots: a peer at its share waits while another is served, and
// freed slots go to the waiting peers in turn, not in arrival order.
func TestFairSlots(t *testing.T) {
	ctx := ctxT(t, 5*time.Second)
	f := newFairSlots(3, 2)
	take := func(peer string) func() {
		r, err := f.acquire(ctx, peer)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a1, a2 := take("a"), take("a")
	// a is at its share: its third waits even though a slot is free.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := f.acquire(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a's third slot: want to wait, got %v", err)
	}
	b1 := take("b") // the free slot is b's at once
	a1()
	a2()
	b1()
	if f.free != 3 || len(f.held) != 0 || len(f.ring) != 0 {
		t.Fatalf("after every release: free %d, held %v, ring %v", f.free, f.held, f.ring)
	}

	// One slot, held by x; a queues two, then c one. Each served peer
	// releases at once. Round-robin serves a, c, a; arrival order would
	// serve a, a, c.
	f = newFairSlots(1, 1)
	x := take("x")
	order := make(chan string, 3)
	queued := func(n int) func() bool {
		return func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			k := 0
			for _, q := range f.waiting {
				k += len(q)
			}
			return k == n
		}
	}
	for i, peer := range []string{"a", "a", "c"} {
		go func() {
			r, err := f.acquire(ctx, peer)
			if err != nil {
				order <- "error: " + err.Error()
				return
			}
			order <- peer
			r()
		}()
		waitFor(t, queued(i+1))
	}
	x()
	var got []string
	for range 3 {
		got = append(got, <-order)
	}
	if want := []string{"a", "c", "a"}; !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
}
