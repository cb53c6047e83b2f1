package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ccgpmesh/ccgp/compensator"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
	"github.com/ccgpmesh/ccgp/relay"
	"github.com/ccgpmesh/ccgp/router"
)

// ClusterOptions configures an in-process mesh.
type ClusterOptions struct {
	Dir           string        // state directory; empty: a temporary one, removed by Close
	ChainInterval time.Duration // simchain block interval, default 50ms
	Validators    int           // governance validators, default 1 (3 genesis orgs either way)
	GovInterval   time.Duration // governance block interval, default 100ms
	Shards        int           // router shards per relay, default 1
	Pipes         []govchain.PipeSpec
	RejectPrefix  []byte // destination contracts refuse payloads starting with it
	Logger        *slog.Logger
	Step          func(string) // told of each set-up step
	ShardOpt      func(*router.Config)
	// WrapChain, if set, wraps each org's chain as its relay sees it
	// (tests put probes on the delivery path).
	WrapChain func(org string, ch subchain.Chain, gov *govchain.Client) subchain.Chain
	// External names an org whose relay (and subchain) run in another
	// process: the cluster registers it and writes its relay.yaml, keys
	// and certificates (Cluster.External), and starts neither.
	External string
	// ExternalApp, with External the source of a pipe, has the external
	// relay's process run that pipe's app on its simulated chain
	// (relay.yaml chain.app) until the pipe holds this many requests, at
	// ExternalRate per second (default 100). The app's key is imported
	// into the external keystore.
	ExternalApp  uint64
	ExternalRate float64
	// Proxies puts a UDP proxy in front of every relay and registers the
	// proxy's address, so tests can cut and heal the QUIC paths.
	Proxies bool
	// Compensation and SendBudget tune the relays' compensators.
	Compensation compensator.Policy
	SendBudget   time.Duration
	// Brokers, if set, is a real Kafka cluster to use instead of the
	// embedded kfake broker (its topics must exist or be auto-created).
	Brokers []string
	// KafkaOpts are added to the embedded broker's options (the benchmark
	// sets a retention so that long runs stay in bounded memory).
	KafkaOpts []kfake.Opt
	// OnReceipts, if set, also observes every receipted batch at its
	// source relay, after the Tracker; it must not block.
	OnReceipts func(b *amdp.Batch, rb *amdp.ReceiptBatch)
	// UntrackedReceipts keeps receipts out of the Tracker (it remembers
	// every packet id): long benchmarks keep bounded books of their own
	// through OnReceipts. Rejections are still tracked.
	UntrackedReceipts bool
	// GovTxEvery is how often each relay packs its governance txs
	// (relay.Config.GovTxEvery); zero takes the relay's default.
	GovTxEvery time.Duration
	// KafkaProxy puts a TCP proxy in front of the embedded broker, which
	// advertises the proxy's address: every Kafka client of the cluster
	// goes through it (Cluster.KafkaProxy), so tests can freeze the broker.
	KafkaProxy bool
	// GovOverRPC has the relays and Cluster.Gov talk to validator 0 over
	// its RPC address instead of in-process, so that they survive
	// StopGovNode and StartGovNode as a remote client would.
	GovOverRPC bool
	// Metrics, if set, receives every relay's collectors (they carry a
	// relay label).
	Metrics prometheus.Registerer
}

// Participants of the in-process mesh: two genesis orgs and one admitted by
// vote, each with a relay and a simulated subchain.
var clusterOrgs = []struct{ org, name string }{{"org-1", ""}, {"org-2", ""}, {"org-4", "Logistics Co"}}

// DefaultPipes is a ring over the three participants plus a reverse pipe.
func DefaultPipes() []govchain.PipeSpec {
	return []govchain.PipeSpec{
		{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
		{ID: "pipe-2-4", From: "org-2", To: "org-4", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
		{ID: "pipe-4-1", From: "org-4", To: "org-1", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
		{ID: "pipe-2-1", From: "org-2", To: "org-1", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
	}
}

// Cluster is the whole mesh in one process on loopback: a governance node,
// an embedded Kafka broker, three simulated subchains and their relays,
// and one source app per pipe.
type Cluster struct {
	opts          ClusterOptions
	dir           string
	ownDir        bool
	Node          *govchain.LocalNode   // validator 0: the cluster client talks to it
	Nodes         []*govchain.LocalNode // every validator
	Gov           *govchain.Client
	Kafka         *kfake.Cluster // nil when a real cluster is used
	stopRetention func()
	brokers       []string
	CA            *crypto.CA
	Parts         []govchain.Participant
	Chains        map[string]*simchain.Chain // by org
	Apps          map[string]*simchain.App   // by pipe
	Tracker       *Tracker
	Proxies       map[string]*UDPProxy // by org, with ClusterOptions.Proxies
	KafkaProxy    *TCPProxy            // with ClusterOptions.KafkaProxy
	govHomes      []string             // each validator's home, for StartGovNode
	External      *ExternalRelay       // with ClusterOptions.External
	TestnetRPC    string
	SetupTxs      int

	mu     sync.Mutex // guards relays
	relays map[string]*runningRelay
	certs  map[string]tls.Certificate // a relay's identity survives its restarts
}

type runningRelay struct {
	r      *relay.Relay
	addr   string
	cancel context.CancelFunc
	done   chan error
	ended  chan struct{} // closed when Run returned, after exit is set
	exit   error
}

// StartCluster starts every component, sets up the consortium through
// governance and starts the relays. Close stops everything.
func StartCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	if opts.ChainInterval == 0 {
		opts.ChainInterval = 50 * time.Millisecond
	}
	if opts.GovInterval == 0 {
		opts.GovInterval = 100 * time.Millisecond
	}
	if opts.Pipes == nil {
		opts.Pipes = DefaultPipes()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Step == nil {
		opts.Step = func(string) {}
	}
	c := &Cluster{opts: opts, dir: opts.Dir, Chains: map[string]*simchain.Chain{}, Apps: map[string]*simchain.App{},
		relays: map[string]*runningRelay{}, Proxies: map[string]*UDPProxy{}, certs: map[string]tls.Certificate{}, Tracker: NewTracker()}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "ccgp-cluster-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	if opts.Validators <= 0 {
		opts.Validators = 1
	}
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: filepath.Join(c.dir, "gov"), ChainID: "ccgp-demo",
		Validators: opts.Validators, GenesisOrgs: 3, BlockInterval: opts.GovInterval})
	if err != nil {
		return nil, err
	}
	for _, n := range tn.Nodes {
		var ln *govchain.LocalNode
		labelled(ctx, partGovchain, func(ctx context.Context) { ln, err = govchain.StartNode(ctx, n.Home, nil) })
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, ln)
		c.govHomes = append(c.govHomes, n.Home)
	}
	c.Node = c.Nodes[0]
	if opts.GovOverRPC {
		root, err := c.Node.TrustRoot()
		if err != nil {
			return nil, err
		}
		c.Gov, err = govchain.Dial(ctx, tn.Nodes[0].RPC, govchain.WithTrustRoot(root), govchain.WithLogger(opts.Logger))
		if err != nil {
			return nil, err
		}
	} else if c.Gov, err = c.Node.Client(); err != nil {
		return nil, err
	}
	if err := c.Gov.WaitReady(ctx); err != nil {
		return nil, err
	}
	c.TestnetRPC = tn.Nodes[0].RPC
	opts.Step(fmt.Sprintf("governance chain up: %d validator(s), genesis orgs %v", opts.Validators, tn.Orgs))

	c.brokers = opts.Brokers
	if len(c.brokers) == 0 {
		var topics []string
		for _, o := range clusterOrgs {
			topics = append(topics, eventsTopic("relay-"+o.org))
		}
		kopts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(8, topics...), kfake.SeedTopics(4, "ccgp.receipts"), kfake.SeedTopics(1, offence.Topic),
			kfake.AllowAutoTopicCreation()}, opts.KafkaOpts...)
		if opts.KafkaProxy {
			if c.KafkaProxy, err = NewTCPProxy(""); err != nil {
				return nil, err
			}
			kopts = append(kopts, kfake.ListenFn(c.KafkaProxy.Listen))
		}
		labelled(ctx, partKafka, func(context.Context) { c.Kafka, err = kfake.NewCluster(kopts...) })
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		c.brokers = c.Kafka.ListenAddrs()
		// The broker's log.retention.ms (a week unless KafkaOpts set it),
		// applied every few seconds: a long run does not keep every
		// record it ever carried in memory.
		c.stopRetention = ApplyRetentionEvery(c.Kafka, 5*time.Second)
	}
	if c.CA, err = crypto.NewDevCA("ccgp demo CA"); err != nil {
		return nil, err
	}
	kind := "embedded Kafka (kfake)"
	if c.Kafka == nil {
		kind = "Kafka"
	}
	opts.Step(fmt.Sprintf("%s at %v; development CA for mTLS", kind, c.brokers))

	for _, o := range clusterOrgs {
		if o.org == opts.External {
			p := participant(o.org, o.name)
			ext, err := c.writeExternal(p)
			if err != nil {
				return nil, err
			}
			p.Address, p.TLSCert = ext.Addr, ext.fingerprint[:]
			c.External = ext
			c.Parts = append(c.Parts, p)
			continue
		}
		p := participant(o.org, o.name)
		var ch *simchain.Chain
		labelled(ctx, partChain, func(context.Context) {
			ch, err = simchain.Open(filepath.Join(c.dir, "chains", o.org), simchain.Options{ID: p.Subchain,
				BlockInterval: opts.ChainInterval, RejectPrefix: opts.RejectPrefix, Logger: opts.Logger.With("chain", p.Subchain)})
		})
		if err != nil {
			return nil, err
		}
		c.Chains[o.org] = ch
		rr, err := c.newRelay(ctx, p, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p.Address = rr.addr
		if opts.Proxies {
			px, err := NewUDPProxy(rr.addr)
			if err != nil {
				return nil, err
			}
			c.Proxies[o.org] = px
			p.Address = px.Addr()
		}
		fp := rr.r.Fingerprint()
		p.TLSCert = fp[:]
		c.relays[o.org] = rr
		c.Parts = append(c.Parts, p)
	}
	opts.Step("3 simulated subchains and their relays bound")

	governors := []crypto.Signer{crypto.DevSigner("gov-org-1"), crypto.DevSigner("gov-org-2"), crypto.DevSigner("gov-org-3")}
	spec := govchain.ConsortiumSpec{Governors: governors, Participants: c.Parts, Pipes: opts.Pipes}
	if c.SetupTxs, err = govchain.SetupConsortium(ctx, c.Gov, spec, opts.Step); err != nil {
		return nil, err
	}
	for _, rr := range c.relays {
		c.run(ctx, rr)
	}
	for _, ps := range opts.Pipes {
		if ps.From == opts.External {
			continue // its source chain lives in the other process
		}
		from := c.part(ps.From)
		c.Apps[ps.ID] = &simchain.App{Chain: c.Chains[ps.From], Signer: from.AppKey, Pipe: ps.ID}
	}
	// Every relay must see the authorized pipes before traffic starts.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, rr := range c.relays {
		err := rr.r.Cache().WaitFor(wctx, func(k *govchain.Cache) bool {
			for _, ps := range opts.Pipes {
				if p, ok := k.Pipe(ps.ID); !ok || p.Status != govchain.PipeStatus_PIPE_ACTIVE {
					return false
				}
			}
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("relays never saw the pipes active: %w", err)
		}
	}
	opts.Step(fmt.Sprintf("relays running; %d pipes active", len(opts.Pipes)))
	return c, nil
}

func eventsTopic(relayID string) string { return "ccgp.events." + relayID }

// Brokers are the cluster's Kafka seed brokers.
func (c *Cluster) Brokers() []string { return c.brokers }

// EventsTopic is the events topic of org's relay, which its listener
// writes and its router shards read.
func (c *Cluster) EventsTopic(org string) string { return eventsTopic(c.part(org).Relay) }

func (c *Cluster) part(org string) govchain.Participant {
	for _, p := range c.Parts {
		if p.Org == org {
			return p
		}
	}
	return govchain.Participant{}
}

func (c *Cluster) newRelay(ctx context.Context, p govchain.Participant, addr string) (*runningRelay, error) {
	cert, ok := c.certs[p.Org]
	if !ok {
		var err error
		if cert, err = c.CA.Issue(p.Relay, nil); err != nil {
			return nil, err
		}
		c.certs[p.Org] = cert
	}
	var ch subchain.Chain = c.Chains[p.Org]
	if c.opts.WrapChain != nil {
		ch = c.opts.WrapChain(p.Org, ch, c.Gov)
	}
	var r *relay.Relay
	var err error
	labelled(ctx, partRelay, func(ctx context.Context) { r, err = c.buildRelay(ctx, p, ch, addr, cert) })
	if err != nil {
		return nil, err
	}
	return &runningRelay{r: r, addr: r.Addr()}, nil
}

// ApplyRetentionEvery applies kc's retention settings every period until
// stop is called. kfake applies them itself only on a ticker that it
// starts for topics with retention settings of their own, once an hour
// by default; and it drops whole segments only, so set log.segment.bytes
// small as well.
func ApplyRetentionEvery(kc *kfake.Cluster, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				kc.ApplyRetention()
			}
		}
	}()
	return func() { close(done) }
}

// buildRelay is relay.New with the cluster's settings.
func (c *Cluster) buildRelay(ctx context.Context, p govchain.Participant, ch subchain.Chain, addr string, cert tls.Certificate) (*relay.Relay, error) {
	return relay.New(ctx, relay.Config{RelayID: p.Relay, Signer: p.RelayKey, Chain: ch, Gov: c.Gov,
		Brokers: c.brokers, Topic: eventsTopic(p.Relay), ListenAddr: addr, Certificate: cert, CAs: c.CA.Pool(),
		DataDir: filepath.Join(c.dir, "relays", p.Org), Shards: c.opts.Shards, Logger: c.opts.Logger, Metrics: c.opts.Metrics,
		OnReceipts: c.onReceipts(), OnReject: c.Tracker.reject, ShardOpt: c.opts.ShardOpt, GovTxEvery: c.opts.GovTxEvery,
		Compensation: c.opts.Compensation, SendBudget: c.opts.SendBudget,
		Destinations: func(relayID string) (relay.DestinationChain, bool) {
			ch, ok := c.Chains[strings.TrimPrefix(relayID, "relay-")]
			return ch, ok
		}})
}

// onReceipts is the relays' receipt hook: the Tracker, then the option's.
func (c *Cluster) onReceipts() func(b *amdp.Batch, rb *amdp.ReceiptBatch) {
	switch {
	case c.opts.UntrackedReceipts && c.opts.OnReceipts != nil:
		return c.opts.OnReceipts
	case c.opts.UntrackedReceipts:
		return nil
	case c.opts.OnReceipts == nil:
		return c.Tracker.receipts
	}
	return func(b *amdp.Batch, rb *amdp.ReceiptBatch) {
		c.Tracker.receipts(b, rb)
		c.opts.OnReceipts(b, rb)
	}
}

func (c *Cluster) run(ctx context.Context, rr *runningRelay) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rr.cancel, rr.done, rr.ended = cancel, make(chan error, 1), make(chan struct{})
	go func() {
		err := rr.r.Run(rctx)
		rr.exit = err
		close(rr.ended)
		rr.done <- err
	}()
}

// Running reports whether org's relay is running: its Run has not
// returned. Once it has, err is what Run returned (a relay that stopped by
// itself, or was stopped).
func (c *Cluster) Running(org string) (running bool, err error) {
	c.mu.Lock()
	rr := c.relays[org]
	c.mu.Unlock()
	if rr == nil || rr.ended == nil {
		return false, fmt.Errorf("relay of %s was never run", org)
	}
	select {
	case <-rr.ended:
		return false, rr.exit
	default:
		return true, nil
	}
}

// Relay returns the running relay of org.
func (c *Cluster) Relay(org string) *relay.Relay {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rr := c.relays[org]; rr != nil {
		return rr.r
	}
	return nil
}

// StopRelay stops org's relay (its chain keeps running).
func (c *Cluster) StopRelay(org string) error {
	c.mu.Lock()
	rr := c.relays[org]
	c.mu.Unlock()
	if rr == nil || rr.cancel == nil {
		return fmt.Errorf("relay of %s is not running", org)
	}
	rr.cancel()
	err := <-rr.done
	rr.cancel = nil
	return err
}

// RestartRelay starts org's relay again on its state and registered address.
func (c *Cluster) RestartRelay(ctx context.Context, org string) error {
	c.mu.Lock()
	old := c.relays[org]
	c.mu.Unlock()
	rr, err := c.newRelay(ctx, c.part(org), old.addr)
	if err != nil {
		return err
	}
	c.run(ctx, rr)
	c.mu.Lock()
	c.relays[org] = rr
	c.mu.Unlock()
	return nil
}

// StopGovNode stops governance validator i (its state stays on disk).
func (c *Cluster) StopGovNode(i int) error { return c.Nodes[i].Stop() }

// StartGovNode starts validator i again on its state, at its addresses.
// Only clients that reach it over RPC (ClusterOptions.GovOverRPC) see it
// again; in-process ones stay bound to the stopped node.
func (c *Cluster) StartGovNode(ctx context.Context, i int) error {
	n, err := govchain.StartNode(ctx, c.govHomes[i], nil)
	if err != nil {
		return err
	}
	c.Nodes[i] = n
	if i == 0 {
		c.Node = n
	}
	return nil
}

// Close stops the relays, the chains, Kafka and the governance node.
func (c *Cluster) Close() error {
	var errs []error
	c.mu.Lock()
	relays := c.relays
	c.mu.Unlock()
	for _, rr := range relays {
		if rr.cancel != nil {
			rr.cancel()
			errs = append(errs, <-rr.done)
		} else if rr.done == nil {
			errs = append(errs, rr.r.Close()) // bound but never run
		}
	}
	for _, px := range c.Proxies {
		errs = append(errs, px.Close())
	}
	for _, ch := range c.Chains {
		errs = append(errs, ch.Close())
	}
	if c.stopRetention != nil {
		c.stopRetention()
	}
	if c.Kafka != nil {
		c.Kafka.Close()
	}
	if c.KafkaProxy != nil {
		errs = append(errs, c.KafkaProxy.Close())
	}
	for _, n := range c.Nodes {
		errs = append(errs, n.Stop())
	}
	if c.ownDir {
		os.RemoveAll(c.dir)
	}
	return errors.Join(errs...)
}

// Accounting is what the destination chains' own records say about the
// packets the apps sent.
type Accounting struct {
	Sent       int
	Delivered  int // distinct sent packets each destination chain executed
	Lost       int // sent packets no destination chain executed (nor rejected)
	Duplicated int // executions beyond the first, over all destination chains
	Rejected   int // refused: by a router, by a receiving relay, or by the destination contract
}

// Account reads every destination chain's delivery records and compares
// them with what the apps sent.
func (c *Cluster) Account(ctx context.Context) (Accounting, error) {
	a := Accounting{Sent: c.Tracker.SentCount()}
	dest := map[string]*simchain.Chain{}
	for _, ps := range c.opts.Pipes {
		dest[ps.ID] = c.Chains[ps.To]
	}
	var firstErr error
	c.Tracker.eachSent(func(id [32]byte, pipe string) {
		rec, ok, err := dest[pipe].FindDelivery(ctx, id)
		switch {
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		case ok && rec.Status == amdp.StatusDelivered:
			a.Delivered++
		case ok:
			a.Rejected++
		case c.Tracker.wasRejected(id):
			a.Rejected++
		default:
			a.Lost++
		}
	})
	for _, ch := range c.Chains {
		a.Duplicated += int(ch.Stats().Duplicates)
	}
	return a, firstErr
}

// Tracker follows packets from the app's send to the source relay's
// receipt: counts, and latency samples for percentiles.
type Tracker struct {
	mu        sync.Mutex // guards the following
	sent      map[[32]byte]sentRec
	latencies []float64 // ms, send -> receipt
	rejected  map[[32]byte]bool
	ids       map[[32]byte]bool // packets with a receipt

	sentN, receipted atomic.Int64
}

type sentRec struct {
	at   time.Time
	pipe string
	seq  uint64
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{sent: map[[32]byte]sentRec{}, rejected: map[[32]byte]bool{}, ids: map[[32]byte]bool{}}
}

// Sent records that p left its app now.
func (t *Tracker) Sent(p *amdp.Packet) {
	t.mu.Lock()
	t.sent[p.ID()] = sentRec{at: time.Now(), pipe: p.PipeId, seq: p.Sequence}
	t.mu.Unlock()
	t.sentN.Add(1)
}

func (t *Tracker) receipts(b *amdp.Batch, rb *amdp.ReceiptBatch) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range rb.Receipts {
		var id [32]byte
		copy(id[:], r.PacketId)
		if s, ok := t.sent[id]; ok && !t.ids[id] {
			t.latencies = append(t.latencies, float64(now.Sub(s.at).Microseconds())/1000)
		}
		t.ids[id] = true
		if r.Status != amdp.StatusDelivered {
			t.rejected[id] = true
		}
	}
	t.receipted.Add(int64(len(rb.Receipts)))
}

func (t *Tracker) reject(p *amdp.Packet, err error) {
	if p == nil {
		return
	}
	t.mu.Lock()
	t.rejected[p.ID()] = true
	t.mu.Unlock()
}

func (t *Tracker) wasRejected(id [32]byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rejected[id]
}

// ReceiptedDistinct is how many different packets have a receipt.
func (t *Tracker) ReceiptedDistinct() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ids)
}

// SentIDs returns the ids of the packets the apps sent.
func (t *Tracker) SentIDs() [][32]byte {
	var out [][32]byte
	t.eachSent(func(id [32]byte, _ string) { out = append(out, id) })
	return out
}

// SentPackets returns the pipe and sequence of every packet the apps
// sent, sorted by pipe, then sequence: what a test asks the governance
// chain about.
func (t *Tracker) SentPackets() []*govchain.PacketRef {
	t.mu.Lock()
	out := make([]*govchain.PacketRef, 0, len(t.sent))
	for _, s := range t.sent {
		out = append(out, &govchain.PacketRef{Pipe: s.pipe, Seq: s.seq})
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		return out[i].Pipe < out[j].Pipe || (out[i].Pipe == out[j].Pipe && out[i].Seq < out[j].Seq)
	})
	return out
}

// SentCount is how many packets the apps sent.
func (t *Tracker) SentCount() int { return int(t.sentN.Load()) }

// Receipted is how many receipts the source relays recorded.
func (t *Tracker) Receipted() int { return int(t.receipted.Load()) }

// RejectedCount is how many packets were refused anywhere on the path.
func (t *Tracker) RejectedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rejected)
}

func (t *Tracker) eachSent(fn func(id [32]byte, pipe string)) {
	t.mu.Lock()
	ids := make([][32]byte, 0, len(t.sent))
	pipes := make([]string, 0, len(t.sent))
	for id, s := range t.sent {
		ids = append(ids, id)
		pipes = append(pipes, s.pipe)
	}
	t.mu.Unlock()
	for i := range ids {
		fn(ids[i], pipes[i])
	}
}

// Percentiles returns the latency percentiles (ms) of the receipts so far.
func (t *Tracker) Percentiles(qs ...float64) []float64 {
	t.mu.Lock()
	l := append([]float64(nil), t.latencies...)
	t.mu.Unlock()
	out := make([]float64, len(qs))
	if len(l) == 0 {
		return out
	}
	sort.Float64s(l)
	for i, q := range qs {
		idx := int(q * float64(len(l)-1))
		out[i] = l[idx]
	}
	return out
}

// Totals sums the relays' transaction-control counters.
type Totals struct {
	ConfirmedPackets int // packets in batches the verifiers confirmed
	RolledBack       int
	Manual           int // transitions to MANUAL recorded
	AnchorTxs        int // governance txs the relays sent: open, receipt and confirm anchors, exceptions
	AnchoredBatches  int
	OpenLatencyMs    float64 // mean, from queueing a batch's open anchor to its commit
}

// Totals reads every running relay's counters.
func (c *Cluster) Totals() Totals {
	var t Totals
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rr := range c.relays {
		st := rr.r.Stats()
		t.ConfirmedPackets += int(st.Verifier.ConfirmedPackets)
		t.RolledBack += int(st.Compensator.RolledBack)
		t.Manual += int(st.Compensator.Manual)
		t.AnchorTxs += int(st.Gov.OpenTxs + st.Gov.ReceiptTxs + st.Gov.ConfirmTxs + st.Gov.ExceptionTxs)
		t.AnchoredBatches += int(st.Gov.OpenBatches)
		t.OpenLatencyMs += float64(st.Gov.OpenLatencyMicros) / 1000
	}
	if t.AnchoredBatches > 0 {
		t.OpenLatencyMs /= float64(t.AnchoredBatches)
	}
	return t
}

func participant(org, name string) govchain.Participant {
	admin := crypto.DevSigner("gov-" + org)
	if name != "" {
		admin = crypto.DevSigner("admin-" + org)
	}
	return govchain.Participant{Org: org, OrgName: name, Admin: admin, Relay: "relay-" + org,
		RelayKey: crypto.DevSigner("relay-" + org), Subchain: "chain-" + org, Kind: "simchain",
		App: "app-" + org, AppKey: crypto.DevSigner("app-" + org), Contract: "ct-" + org}
}

// ExternalRelay is what another process needs to run an org's relay in
// the cluster: `ccgp relay start --config Config --insecure-dev-keys`.
type ExternalRelay struct {
	Org, Dir, Config, Addr string
	ChainDir               string
	fingerprint            [32]byte
}

func (c *Cluster) writeExternal(p govchain.Participant) (*ExternalRelay, error) {
	dir := filepath.Join(c.dir, "external", p.Org)
	ks, err := crypto.OpenKeystore(filepath.Join(dir, "keys"), nil, true)
	if err != nil {
		return nil, err
	}
	if _, err := ks.Import(p.Relay, crypto.DevSigner(p.Relay)); err != nil {
		return nil, err
	}
	app := ""
	if c.opts.ExternalApp > 0 {
		for _, ps := range c.opts.Pipes {
			if ps.From != p.Org {
				continue
			}
			if _, err := ks.Import(p.App, crypto.DevSigner(p.App)); err != nil { // p.AppKey, as participants are made
				return nil, err
			}
			app = fmt.Sprintf(", app: {pipe: %s, key: %s, total: %d, rate: %g}", ps.ID, p.App, c.opts.ExternalApp, c.opts.ExternalRate)
			break
		}
	}
	cert, err := c.CA.Issue(p.Relay, nil)
	if err != nil {
		return nil, err
	}
	if err := crypto.SaveCertificate(filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), cert); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), c.CA.CertificatePEM(), 0o644); err != nil {
		return nil, err
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := udp.LocalAddr().String()
	udp.Close()
	cfg := fmt.Sprintf(`relay_id: %s
key: %s
home: %s
governance: %s
governance_genesis: %s
kafka: [%s]
topic: %s
listen: %s
tls: {ca: ca.crt, cert: relay.crt, key: relay.key}
data_dir: data
shards: 1
chain: {kind: simchain, id: %s, dir: chain, block_interval: %s%s}
`, p.Relay, p.Relay, dir, c.TestnetRPC, c.Node.GenesisFile(), strings.Join(c.brokers, ", "), eventsTopic(p.Relay), addr, p.Subchain, c.opts.ChainInterval, app)
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return &ExternalRelay{Org: p.Org, Dir: dir, Config: path, Addr: addr, ChainDir: filepath.Join(dir, "chain"),
		fingerprint: crypto.Fingerprint(cert)}, nil
}
