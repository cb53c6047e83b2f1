package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Endpoint is one relay's QUIC endpoint: it sends batches to peers (Send)
// and, when it has a Deliverer, receives theirs, delivers them exactly
// once and answers with signed receipts (Run). One UDP socket carries
// both directions.
type Endpoint struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	codec *codec

	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener // nil when send-only
	// dialConf and listenConf differ in who may open streams: only the
	// dialler does, one per batch.
	dialConf, listenConf *quic.Config

	store  *DedupeStore // nil when send-only
	admit  *admission   // new connections, by source address
	in     *inbound     // accepted connections and served streams, by peer
	slots  *fairSlots   // processing slots, shared fairly among peers
	claims claims

	// ctx ends when Close is called; every wait in the endpoint selects
	// on it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts Run and the Sends in progress, so that Close returns only
	// when nothing uses the endpoint's resources any more.
	wg sync.WaitGroup

	mu      sync.Mutex // guards the following
	closed  bool
	running bool
	peers   map[string]*peer
}

// New validates cfg, binds the UDP socket (so Addr is known at once) and,
// when cfg has a Deliverer, opens the dedupe store and starts listening;
// connections are accepted once Run is called. Close releases everything.
func New(cfg Config) (*Endpoint, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Endpoint{
		cfg:    cfg,
		log:    cfg.Logger.With("relay", cfg.RelayID),
		in:     &inbound{maxConns: cfg.MaxConnsPerPeer, maxStreams: cfg.MaxStreamsPerPeer, peers: make(map[string]*inPeer)},
		slots:  newFairSlots(cfg.MaxConcurrentBatches, cfg.MaxBatchesPerPeer),
		claims: claims{held: make(map[[32]byte]chan struct{})},
		peers:  make(map[string]*peer),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			e.release()
		}
	}()
	if e.m, err = newMetrics(cfg.RelayID, cfg.Metrics); err != nil {
		return nil, err
	}
	if e.codec, err = newCodec(cfg.Limits); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	if cfg.Deliverer != nil {
		if e.store, err = OpenDedupeStore(cfg.DedupeDir, e.log); err != nil {
			return nil, err
		}
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen address %q: %w", cfg.ListenAddr, err)
	}
	if e.udp, err = net.ListenUDP("udp", addr); err != nil {
		return nil, fmt.Errorf("mesh: bind %s: %w", cfg.ListenAddr, err)
	}
	e.admit = newAdmission(cfg.ConnRate, cfg.ConnBurst, e.m)
	e.tr = &quic.Transport{Conn: e.udp}
	if e.store != nil {
		e.tr.VerifySourceAddress = e.admit.verifySource
		e.tr.ConnContext = e.admit.connContext
		// Only a receiving endpoint has connections that outlive it in
		// peers' memory, and a store to remember the key in.
		if e.tr.StatelessResetKey, err = e.store.statelessResetKey(); err != nil {
			return nil, err
		}
	}
	e.dialConf = &quic.Config{
		HandshakeIdleTimeout: cfg.DialTimeout,
		MaxIdleTimeout:       cfg.IdleTimeout,
		KeepAlivePeriod:      cfg.IdleTimeout / 3,
		// The peer never opens streams on a connection we dialled.
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
	}
	e.listenConf = &quic.Config{
		HandshakeIdleTimeout: cfg.DialTimeout,
		MaxIdleTimeout:       cfg.IdleTimeout,
		// Per connection; serveConn bounds a peer's streams over all its
		// connections.
		MaxIncomingStreams:    int64(cfg.MaxStreamsPerPeer),
		MaxIncomingUniStreams: -1,
	}
	if e.store != nil {
		if e.ln, err = e.tr.Listen(e.serverTLS(), e.listenConf); err != nil {
			return nil, fmt.Errorf("mesh: listen on %s: %w", e.udp.LocalAddr(), err)
		}
	}
	ok = true
	e.log.Info("mesh endpoint open", "addr", e.Addr().String(), "receiving", cfg.Deliverer != nil)
	return e, nil
}

// Addr is the bound UDP address.
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// RelayID is this endpoint's relay id.
func (e *Endpoint) RelayID() string { return e.cfg.RelayID }

// Run accepts peers' connections and serves their batches until ctx ends
// or Close is called; then it closes the connections it accepted and
// waits for their batches in progress to stop (a delivery in progress is
// cancelled: its in-flight markers make the sender's retry safe). It
// returns nil after Close, ctx.Err() after ctx ended, and ErrClosed if
// called after Close. Run may be called once. A send-only endpoint has
// nothing to accept: Run just waits.
func (e *Endpoint) Run(ctx context.Context) error {
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return errors.New("mesh: Run called twice")
	}
	e.running = true
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.ctx, cancel)
	defer stop()

	if e.ln == nil {
		<-ctx.Done()
		return e.runErr(ctx)
	}
	var conns sync.WaitGroup // connection and stream goroutines
	defer conns.Wait()
	conns.Add(1)
	go func() {
		defer conns.Done()
		e.revalidateEvery(ctx, e.cfg.RevalidateInterval)
	}()
	if e.cfg.OnReceipts != nil {
		conns.Add(1)
		go func() {
			defer conns.Done()
			e.replayOwed(ctx)
		}()
	}
	for {
		conn, err := e.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return e.runErr(ctx)
			}
			return fmt.Errorf("mesh: accept: %w", err)
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			e.serveConn(ctx, conn, &conns)
		}()
	}
}

// replayOwed tells the OnReceipts hook again of every receipt batch it
// has not acknowledged (Anchored): those a previous run signed and whose
// anchors it did not see committed before it stopped or crashed. Their
// senders hold the receipts and will not resend, so nothing else would.
func (e *Endpoint) replayOwed(ctx context.Context) {
	all, err := e.store.owedAll()
	if err != nil {
		// The records stay; the next start tries again.
		e.log.Error("could not read the receipt batches owed their anchors", "err", err)
		return
	}
	if len(all) > 0 {
		e.log.Info("anchoring the receipts of an earlier run again", "batches", len(all))
	}
	for _, o := range all {
		if ctx.Err() != nil {
			return
		}
		if err := amdp.SealReceiptBatch(o.receipts, e.cfg.Signer); err != nil {
			e.log.Error("could not seal owed receipts", "peer", o.batch.Header.FromRelay, "batch_seq", o.batch.Header.BatchSeq, "err", err)
			continue
		}
		e.cfg.OnReceipts(o.batch, o.receipts)
	}
}

// Anchored tells the endpoint that the hook is done with the receipt batch
// answering batch seq from peer (OnReceipts): it is not told of it again.
func (e *Endpoint) Anchored(peer string, seq uint64) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()
	if e.store == nil {
		return nil
	}
	return e.store.settleOwed(peer, seq)
}

func (e *Endpoint) runErr(ctx context.Context) error {
	if e.ctx.Err() != nil {
		return nil
	}
	return context.Cause(ctx)
}

// Close stops the endpoint: Run returns, Sends in progress return
// ErrClosed, connections are closed with an application error that tells
// peers the relay is shutting down, and the socket and store are
// released. Close waits for all of that and is idempotent.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	peers := make([]*peer, 0, len(e.peers))
	for _, p := range e.peers {
		peers = append(peers, p)
	}
	e.mu.Unlock()

	e.cancel()
	for _, p := range peers {
		p.close()
	}
	e.wg.Wait()
	return e.release()
}

// release frees what New acquired; it is also New's clean-up on failure.
func (e *Endpoint) release() error {
	e.cancel()
	var errs []error
	if e.ln != nil {
		e.ln.Close() // only fails if already closed
	}
	if e.tr != nil {
		errs = append(errs, e.tr.Close())
	}
	if e.udp != nil {
		if err := e.udp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if e.store != nil {
		errs = append(errs, e.store.Close())
	}
	if e.codec != nil {
		e.codec.close()
	}
	if e.m != nil {
		e.m.unregister()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mesh: close: %w", err)
	}
	return nil
}

// begin registers an operation that uses the endpoint's resources, so
// that Close waits for it; it fails once Close has begun.
func (e *Endpoint) begin() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.wg.Add(1)
	return nil
}

// relayKey returns the signing key of relayID: its service's account's
// current key, as the registry records it. Only an ACTIVE account will do,
// and one never rotated must have the key its address was derived from;
// after a rotation (KeyHeight > 0) the address stays and the key is the
// registry's alone, so a batch signed with the rotated-out key fails.
func (e *Endpoint) relayKey(relayID string) (crypto.Suite, []byte, error) {
	svc, ok := e.cfg.Registry.Service(relayID)
	if !ok {
		return "", nil, fmt.Errorf("%w: %s", ErrUnknownRelay, relayID)
	}
	addr, err := crypto.AddressFromBytes(svc.GetAccount())
	if err != nil {
		return "", nil, fmt.Errorf("%w: relay %s: service account: %v", ErrNoRelayKey, relayID, err)
	}
	acct, ok := e.cfg.Registry.Account(addr)
	switch {
	case !ok:
		return "", nil, fmt.Errorf("%w: relay %s: account %s not registered", ErrNoRelayKey, relayID, addr)
	case acct.GetStatus() != govchain.AccountStatus_ACCOUNT_ACTIVE:
		return "", nil, fmt.Errorf("%w: relay %s: account %s is %v", ErrNoRelayKey, relayID, addr, acct.GetStatus())
	}
	suite := crypto.Suite(acct.GetSuite())
	if acct.GetKeyHeight() == 0 && crypto.AddressOf(suite, acct.GetPublicKey()) != addr {
		return "", nil, fmt.Errorf("%w: relay %s: account %s: key does not match its address", ErrNoRelayKey, relayID, addr)
	}
	return suite, acct.GetPublicKey(), nil
}

// backoff is the wait before connection attempt n+1 after n failures:
// doubling from MinBackoff, capped at MaxBackoff, jittered so that relays
// that lost a common peer do not redial in step.
func (e *Endpoint) backoff(n int) time.Duration {
	return backoff.Policy{Min: e.cfg.MinBackoff, Max: e.cfg.MaxBackoff, Jitter: true}.Delay(n)
}

// sleep waits for d, ctx or Close, whichever comes first.
func (e *Endpoint) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-e.ctx.Done():
		return ErrClosed
	}
}
