package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/compensator"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
	"github.com/ccgpmesh/ccgp/router"
	"github.com/ccgpmesh/ccgp/verifier"
)

// The relay wires these implementers to the interfaces their consumers
// declare; the assertions live here, where both sides are imported.
var (
	_ mesh.Deliverer          = subchain.Chain(nil)
	_ mesh.Registry           = (*govchain.Cache)(nil)
	_ mesh.AnchorView         = (*govchain.Cache)(nil)
	_ router.Registry         = (*govchain.Cache)(nil)
	_ router.Compensator      = (*compensator.Compensator)(nil)
	_ compensator.SourceChain = subchain.Chain(nil)
	_ verifier.Finder         = subchain.Chain(nil)
)

// DestinationChain is a destination chain's records as a source relay
// reads them (subchain.Chain satisfies it).
type DestinationChain interface {
	FindDelivery(ctx context.Context, packetID [32]byte) (subchain.Delivery, bool, error)
	Head(ctx context.Context) (subchain.Head, error)
}

// Config configures a Relay.
type Config struct {
	RelayID string
	Signer  crypto.Signer  // the relay's cross-chain account key (batches, receipts)
	Chain   subchain.Chain // this relay's subchain
	Gov     *govchain.Client

	Brokers       []string
	Topic         string // events topic, default "ccgp.events"
	ReceiptsTopic string // where source-side receipts are recorded, default "ccgp.receipts"

	ListenAddr  string // QUIC, e.g. "127.0.0.1:7101"; "127.0.0.1:0" picks a port
	Certificate tls.Certificate
	CAs         *x509.CertPool

	DataDir string // checkpoint and delivery record
	Shards  int    // router shards in this process, default 1

	Limits   amdp.Limits
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	ShardOpt func(*router.Config) // adjusts each shard's config (tests, tuning)

	// OnReceipts observes every receipted batch on the source side after
	// it was recorded; it must not block.
	OnReceipts func(b *amdp.Batch, rb *amdp.ReceiptBatch)
	// OnReject observes every packet a shard rejected; it must not block.
	OnReject func(p *amdp.Packet, err error)

	// Destinations returns the chain behind a destination relay, for the
	// verifier to confirm receipts against and the compensator to check a
	// refusal or a timeout against before any rollback; nil or false leaves
	// batches proven against their anchors but unconfirmed, and sends
	// refusals and timeouts to MANUAL (their evidence cannot be checked).
	Destinations func(relayID string) (DestinationChain, bool)
	// OffencesTopic is where offence records go, default offence.Topic.
	OffencesTopic string
	// Compensation bounds the compensator's resends before MANUAL.
	Compensation compensator.Policy
	// SendBudget is how long a shard retries a batch before the
	// compensator takes it (default 30s).
	SendBudget time.Duration
	// GovTxEvery is how often the relay packs its governance txs
	// (anchors, confirmations, exceptions). Default 50ms.
	GovTxEvery time.Duration
}

// Relay is one running relay.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	cache *govchain.Cache
	ep    *mesh.Endpoint
	prod  *kgo.Client
	lis   *ingest.Listener
	// unregister drops the relay's own metrics (nil without a registry).
	unregister func()
	txq        *txq
	ver        *verifier.Verifier
	comp       *compensator.Compensator
	offs       *offenceLog

	runCtx atomic.Pointer[context.Context] // set by Run: bounds callbacks from the mesh

	mu     sync.Mutex // guards shards
	shards []*router.Shard

	closeOnce sync.Once
}

// New builds the relay and binds its QUIC address (so that Addr can be
// registered on the governance chain before Run).
func New(ctx context.Context, cfg Config) (*Relay, error) {
	switch {
	case cfg.RelayID == "" || cfg.Signer == nil || cfg.Chain == nil || cfg.Gov == nil:
		return nil, errors.New("relay: RelayID, Signer, Chain and Gov are required")
	case len(cfg.Brokers) == 0:
		return nil, errors.New("relay: at least one Kafka broker is required")
	case cfg.DataDir == "":
		return nil, errors.New("relay: DataDir is required")
	}
	if cfg.Topic == "" {
		cfg.Topic = ingest.DefaultTopic
	}
	if cfg.ReceiptsTopic == "" {
		cfg.ReceiptsTopic = "ccgp.receipts"
	}
	if cfg.Shards <= 0 {
		cfg.Shards = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: data dir: %w", err)
	}
	if cfg.OffencesTopic == "" {
		cfg.OffencesTopic = offence.Topic
	}
	r := &Relay{cfg: cfg, log: cfg.Logger.With("relay", cfg.RelayID)}
	// One release on error: every part opened so far is closed, in
	// reverse order.
	var opened []func() error
	ok := false
	defer func() {
		if !ok {
			for i := len(opened) - 1; i >= 0; i-- {
				opened[i]()
			}
		}
	}()
	var err error
	if r.cache, err = govchain.NewCache(ctx, cfg.Gov, r.log); err != nil {
		return nil, fmt.Errorf("relay: governance view: %w", err)
	}
	if r.prod, err = ingest.NewKafkaClient(cfg.Brokers); err != nil {
		return nil, fmt.Errorf("relay: kafka: %w", err)
	}
	opened = append(opened, func() error { r.prod.Close(); return nil })
	if r.offs, err = newOffenceLog(r.prod, cfg.OffencesTopic, r.log, cfg.Metrics, cfg.RelayID); err != nil {
		return nil, fmt.Errorf("relay: offence metrics: %w", err)
	}
	r.txq = newTxq(cfg.Gov, cfg.Signer, r.log, cfg.GovTxEvery)
	r.ep, err = mesh.New(mesh.Config{RelayID: cfg.RelayID, ListenAddr: cfg.ListenAddr, Certificate: cfg.Certificate, CAs: cfg.CAs,
		Signer: cfg.Signer, Registry: r.cache, Deliverer: cfg.Chain, DedupeDir: filepath.Join(cfg.DataDir, "delivered"),
		Limits: cfg.Limits, Logger: cfg.Logger, Metrics: cfg.Metrics, // the mesh labels its own logs
		Anchors: r.cache, OnReceipts: r.anchorReceipts, Offences: r.offs})
	if err != nil {
		return nil, fmt.Errorf("relay: mesh endpoint: %w", err)
	}
	opened = append(opened, r.ep.Close)
	dests := func(relayID string) (compensator.Finder, bool) {
		if cfg.Destinations == nil {
			return nil, false
		}
		return cfg.Destinations(relayID)
	}
	if r.ver, err = verifier.New(verifier.Config{Gov: cfg.Gov, Recorder: r.txq, Logger: r.log,
		Dir:         filepath.Join(cfg.DataDir, "verifier"),
		Destination: func(relayID string) (verifier.Finder, bool) { return dests(relayID) }}); err != nil {
		return nil, err
	}
	opened = append(opened, r.ver.Close)
	r.comp, err = compensator.New(compensator.Config{RelayID: cfg.RelayID, Signer: cfg.Signer, Sender: r.ep, Anchors: r.txq,
		Recorder: r.txq, Source: cfg.Chain, Gov: cfg.Gov, States: cfg.Gov, Destinations: dests, Offences: r.offs,
		RelayOrg: func(id string) string { s, _ := r.cache.Service(id); return s.GetOrg() },
		Dir:      filepath.Join(cfg.DataDir, "compensator"),
		Policy:   cfg.Compensation, Logger: r.log, SendTimeout: cfg.SendBudget, Record: r.recordReceipts})
	if err != nil {
		return nil, err
	}
	opened = append(opened, r.comp.Close)
	r.lis, err = ingest.NewListener(cfg.Chain, r.prod, ingest.FileCheckpoint(filepath.Join(cfg.DataDir, "listener.checkpoint")),
		ingest.Topic(cfg.Topic), ingest.WithLogger(r.log))
	if err != nil {
		return nil, fmt.Errorf("relay: listener: %w", err)
	}
	if cfg.Metrics != nil {
		// A Kafka fault no longer stops the relay (the listener resumes
		// from its checkpoint), so it must show here as well as in the log.
		restarts := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ccgp_listener_restarts_total",
			Help:        "Listener runs started again after Kafka failed a record.",
			ConstLabels: prometheus.Labels{"relay": cfg.RelayID}}, func() float64 { return float64(r.lis.Stats().Restarts) })
		if err := cfg.Metrics.Register(restarts); err != nil {
			return nil, fmt.Errorf("relay: listener metrics: %w", err)
		}
		r.unregister = func() { cfg.Metrics.Unregister(restarts) } // a relay restarted in-process registers again
		opened = append(opened, func() error { r.unregister(); return nil })
	}
	ok = true
	return r, nil
}

// Addr is the bound QUIC address.
func (r *Relay) Addr() string { return r.ep.Addr().String() }

// Fingerprint is the SHA-256 of the relay's TLS certificate, as registered.
func (r *Relay) Fingerprint() [32]byte { return crypto.Fingerprint(r.cfg.Certificate) }

// Cache is the relay's governance view.
func (r *Relay) Cache() *govchain.Cache { return r.cache }

// ListenerStats reports the listener's progress.
func (r *Relay) ListenerStats() ingest.ListenerStats { return r.lis.Stats() }

// Run runs every part until ctx ends or one fails, then stops them all and
// releases the relay. It returns nil after a clean stop. The traffic parts
// (listener, shards) stop first; the services they lean on (governance
// txs, verifier, compensator, mesh, cache) stop after them, so a shard
// finishing its last cycle still gets its anchors committed.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	core, cancelCore := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCore()
	var trafficWG, coreWG sync.WaitGroup
	errs := make(chan error, 8+r.cfg.Shards)
	// Each part runs under the pprof label ccgp=relay/<part> (inherited
	// by the goroutines it starts), so that a CPU profile of a relay, or
	// of ccgp bench's whole cluster, splits by part.
	run := func(wg *sync.WaitGroup, runCtx context.Context, name, part string, f func(context.Context) error) {
		wg.Add(1)
		go pprof.Do(runCtx, pprof.Labels("ccgp", "relay/"+part), func(runCtx context.Context) {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errs <- fmt.Errorf("relay %s: %s: %w", r.cfg.RelayID, name, err)
				cancel()
			}
		})
	}
	r.runCtx.Store(&core)
	run(&coreWG, core, "governance cache", "cache", r.cache.Run)
	run(&coreWG, core, "governance txs", "txq", r.txq.Run)
	run(&coreWG, core, "verifier", "verifier", r.ver.Run)
	run(&coreWG, core, "compensator", "compensator", r.comp.Run)
	run(&coreWG, core, "offence log", "offences", r.offs.Run)
	run(&coreWG, core, "mesh", "mesh", r.ep.Run)
	// Serve, not Run: a produce failure is retried from the checkpoint
	// instead of ending the relay.
	run(&trafficWG, ctx, "listener", "listener", r.lis.Serve)
	for i := 0; i < r.cfg.Shards; i++ {
		var s *router.Shard
		var err error
		// The shard's Kafka client starts its goroutines here.
		pprof.Do(ctx, pprof.Labels("ccgp", "relay/router"), func(context.Context) { s, err = r.newShard(i) })
		if err != nil {
			cancel()
			trafficWG.Wait()
			cancelCore()
			coreWG.Wait()
			r.release()
			return err
		}
		run(&trafficWG, ctx, fmt.Sprintf("shard %d", i), "router", s.Run)
	}
	<-ctx.Done()
	trafficWG.Wait()
	cancelCore()
	coreWG.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(append(all, r.release())...)
}

func (r *Relay) release() error {
	var err error
	r.closeOnce.Do(func() {
		r.prod.Close()
		if r.unregister != nil {
			r.unregister()
		}
		err = errors.Join(r.ep.Close(), r.comp.Close(), r.ver.Close())
	})
	return err
}

// Close releases a relay that was built but never run (Run releases its
// own on return).
func (r *Relay) Close() error { return r.release() }

// StartShard runs one more router shard until the returned stop is called
// (which waits for it to leave the group); for scaling tests and tools.
func (r *Relay) StartShard(ctx context.Context) (stop func() error, err error) {
	r.mu.Lock()
	n := len(r.shards)
	r.mu.Unlock()
	s, err := r.newShard(n)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() error { cancel(); return <-done }, nil
}

// ShardStats sums the counters of the relay's shards.
func (r *Relay) ShardStats() router.Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out router.Stats
	for _, s := range r.shards {
		st := s.Stats()
		out.Routed += st.Routed
		out.Batches += st.Batches
		out.Rejected += st.Rejected
	}
	return out
}

func (r *Relay) newShard(i int) (*router.Shard, error) {
	var reg prometheus.Registerer
	if r.cfg.Metrics != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"relay": r.cfg.RelayID, "shard": fmt.Sprint(i)}, r.cfg.Metrics)
	}
	rc := router.Config{RelayID: r.cfg.RelayID, Signer: r.cfg.Signer, Registry: r.cache, Sender: r.ep,
		Receipts: &receiptLog{r: r}, Anchors: r.txq, Comp: r.comp, SendBudget: r.cfg.SendBudget,
		Brokers: r.cfg.Brokers, Topic: r.cfg.Topic, Limits: r.cfg.Limits,
		OnReject: r.cfg.OnReject, Offences: r.offs, Logger: r.log.With("shard", i), Metrics: reg}
	if r.cfg.ShardOpt != nil {
		r.cfg.ShardOpt(&rc)
	}
	s, err := router.NewShard(rc)
	if err != nil {
		return nil, fmt.Errorf("relay: shard %d: %w", i, err)
	}
	r.mu.Lock()
	r.shards = append(r.shards, s)
	r.mu.Unlock()
	return s, nil
}

// receiptLog records each receipted batch on the source side in Kafka (the
// receipts topic: the verifier and analytics read it) before the shard
// commits its offsets.
type receiptLog struct{ r *Relay }

func (l *receiptLog) Receipts(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error {
	// Refusals go to the compensator (durably) before anything is committed.
	if err := l.r.comp.Receipts(ctx, b, rb); err != nil {
		return err
	}
	return l.r.recordReceipts(ctx, b, rb)
}

// recordReceipts logs a receipted batch in the receipts topic and hands it
// to the verifier: for the router's batches and the compensator's resends.
func (r *Relay) recordReceipts(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error {
	v, err := amdp.EncodeReceiptBatch(nil, rb)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec := &kgo.Record{Topic: r.cfg.ReceiptsTopic, Key: []byte(b.Header.ToRelay), Value: v}
	if err := r.prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("record receipts: %w", err)
	}
	if err := r.ver.Enqueue(ctx, b, rb); err != nil {
		return err
	}
	if r.cfg.OnReceipts != nil {
		r.cfg.OnReceipts(b, rb)
	}
	return nil
}

// anchorReceipts is the mesh's hook on the destination side: every receipt
// batch this relay signs is anchored on the governance chain. The mesh
// keeps each batch owed until the anchor is settled (Endpoint.Anchored),
// and tells this hook again of the owed ones when the relay starts again:
// an anchor still queued when the relay stopped is not lost, since the
// source, holding the receipts, never resends the batch.
func (r *Relay) anchorReceipts(b *amdp.Batch, rb *amdp.ReceiptBatch) {
	ctxp := r.runCtx.Load()
	if ctxp == nil {
		return // not running: the owed record brings it back at Run
	}
	st := make([]byte, len(rb.Receipts))
	for i, rc := range rb.Receipts {
		st[i] = byte(rc.Status)
		if rc.Status == amdp.ReceiptStatus_RECEIPT_STATUS_UNSPECIFIED {
			st[i] = byte(amdp.StatusRejected) // refused by validation
		}
	}
	from, seq := b.Header.FromRelay, b.Header.BatchSeq
	settled := func() {
		if err := r.ep.Anchored(from, seq); err != nil {
			// The record stays: the next start anchors it again, and
			// governance answers that it exists.
			r.log.Warn("receipt anchor committed but still recorded as owed", "from", from, "batch_seq", seq, "err", err)
		}
	}
	err := r.txq.AnchorReceipts(*ctxp, &govchain.BatchReceipts{FromRelay: from, BatchSeq: seq,
		ReceiptRoot: rb.Header.MerkleRoot, Statuses: st}, verifier.Refs(b), settled)
	if err != nil && (*ctxp).Err() == nil {
		r.log.Warn("receipt anchor not queued", "batch_seq", b.Header.BatchSeq, "err", err)
	}
}

// Stats are a relay's counters.
type Stats struct {
	Router      router.Stats
	Gov         TxStats
	Verifier    verifier.Stats
	Compensator compensator.Stats
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Router: r.ShardStats(), Gov: r.txq.stats(), Verifier: r.ver.Stats(), Compensator: r.comp.Stats()}
}

// Compensator exposes the packets under compensation.
func (r *Relay) Compensator() *compensator.Compensator { return r.comp }
