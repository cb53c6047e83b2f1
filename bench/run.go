package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/router"
)

// RunOptions configures Run, the benchmark behind `ccgp bench`. Zero
// fields take the defaults noted.
type RunOptions struct {
	Duration time.Duration // the measured window, default 30s
	Warmup   time.Duration // traffic before the window, default 5s
	// Rate is the open loop's packets/s over all pipes; 0 runs the closed
	// loop (as fast as the mesh takes them, Window in flight per pipe).
	Rate   int
	Window int // closed loop: packets in flight per pipe, default 4096

	Pipes   int          // pipes over the three participants, default 12
	Payload int          // bytes per packet, default 256
	Shards  int          // router shards per relay, default 1
	Suite   crypto.Suite // the apps' signing suite, default ed25519
	Strict  bool         // pipes in strict mode (default optimistic)
	// Router tuning (router.Config). The defaults are the benchmark's
	// tuned values, larger than the router's own (512 and 4096): a cycle
	// then carries more packets per governance anchor and per round trip.
	BatchPackets int           // packets per batch (MaxBatchPackets), default 4096
	MaxPoll      int           // records per router cycle, default 16384
	Linger       time.Duration // wait for more records after the first, default the router's (5ms)
	// NoAnchors runs the routers without open-batch anchoring (a
	// diagnostic: the data path alone; strict pipes then never deliver).
	NoAnchors bool

	// SkipCeilings leaves the ceilings (verify, Kafka, QUIC) unmeasured:
	// `ccgp bench --shards 1,2,4` measures them once in the parent.
	SkipCeilings bool
	CeilingTime  time.Duration // per ceiling, default 2s
	BaselineKind string        // BaselineOpenBatch (default) or BaselineRegisterNode
	BaselineTxs  int           // default 10000; negative skips the baseline

	ChainInterval time.Duration // simchain block interval, default 50ms
	GovInterval   time.Duration // governance block interval, default 100ms
	GovTxEvery    time.Duration // relays' governance tx packing, default the relay's
	MaxPresign    int           // bound on pre-signed packets, default 4M
	// SignLive signs each packet as it is sent instead of beforehand: the
	// apps' signing then shares the cores (a note says so), but memory
	// holds no pool, which a long run needs to show whether the mesh's
	// memory stays flat. Open loop only.
	SignLive bool

	CPUProfile io.Writer // if set, a CPU profile of the window
	// MemProfile, if set, receives the heap allocation profile at the
	// window's start and at its end: compare them with
	// `go tool pprof -sample_index=alloc_space -base start end`.
	MemProfile func(end bool) (io.WriteCloser, error)
	Brokers    []string // a real Kafka cluster instead of the embedded broker
	// ClickHouse, if set, is a server's native address: the analytics
	// sink and governance follower run in this process during the run
	// (pprof label "analytics", apart from the relays' parts) into a
	// database of their own, dropped at the end.
	ClickHouse string
	Logger     *slog.Logger
	Progress   io.Writer // a line per second; nil discards
}

func (o RunOptions) withDefaults() (RunOptions, error) {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Duration, 30*time.Second)
	def(&o.Warmup, 5*time.Second)
	def(&o.CeilingTime, 2*time.Second)
	def(&o.ChainInterval, 50*time.Millisecond)
	def(&o.GovInterval, 100*time.Millisecond)
	defi(&o.Window, 4096)
	defi(&o.Pipes, 12)
	defi(&o.Payload, 256)
	defi(&o.Shards, 1)
	defi(&o.MaxPresign, 4_000_000)
	defi(&o.BatchPackets, 4096)
	defi(&o.MaxPoll, 16384)
	if o.BaselineTxs == 0 {
		o.BaselineTxs = 10000
	}
	if o.BaselineKind == "" {
		o.BaselineKind = BaselineOpenBatch
	}
	if o.Suite == "" {
		o.Suite = crypto.SuiteEd25519
	}
	if o.Suite != crypto.SuiteEd25519 {
		return o, fmt.Errorf("bench: suite %q: only %s is implemented", o.Suite, crypto.SuiteEd25519)
	}
	if o.Rate < 0 {
		return o, errors.New("bench: rate must not be negative")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o, nil
}

// Result is one run's figures; `ccgp bench --json` prints it. Rates are
// per second of the measured window; latencies are from the packet's
// commit on its source chain. Figures that this run could not measure are
// null, with a note.
type Result struct {
	Suite      string `json:"suite"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Loop       string `json:"loop"` // closed or open
	Mode       string `json:"mode"` // optimistic or strict
	RateTarget int    `json:"rate_target_per_s,omitempty"`
	Pipes      int    `json:"pipes"`
	Shards     int    `json:"shards"`
	Payload    int    `json:"payload"`

	E2EPacketsPerS     float64  `json:"e2e_packets_per_s"`
	DeliveredPerS      float64  `json:"delivered_per_s"`
	ReceiptedPerS      float64  `json:"receipted_per_s"`
	AnchoredPerS       *float64 `json:"anchored_per_s"`
	ConfirmedPerS      *float64 `json:"confirmed_per_s"`
	WindowS            float64  `json:"window_s"`
	PacketsInWindow    uint64   `json:"packets_in_window"`
	P50DeliveredMs     *float64 `json:"p50_delivered_ms"`
	P99DeliveredMs     *float64 `json:"p99_delivered_ms"`
	P999DeliveredMs    *float64 `json:"p999_delivered_ms"`
	P50ReceiptedMs     *float64 `json:"p50_receipted_ms"`
	P99ReceiptedMs     *float64 `json:"p99_receipted_ms"`
	P999ReceiptedMs    *float64 `json:"p999_receipted_ms"`
	P50AnchoredMs      *float64 `json:"p50_anchored_ms"`
	P99AnchoredMs      *float64 `json:"p99_anchored_ms"`
	P50ConfirmedMs     *float64 `json:"p50_confirmed_ms"`
	P99ConfirmedMs     *float64 `json:"p99_confirmed_ms"`
	P999ConfirmedMs    *float64 `json:"p999_confirmed_ms"`
	ChainTxsPerPacket  float64  `json:"chain_txs_per_packet"`
	ChainTxsInWindow   uint64   `json:"chain_txs_in_window"`
	WireBytesPerPacket float64  `json:"wire_bytes_per_packet"`
	ZstdRatio          float64  `json:"zstd_ratio"`
	AllocsPerPacket    float64  `json:"allocs_per_packet"`
	AllocBytesPerPkt   float64  `json:"alloc_bytes_per_packet"`
	CPUSPer1000        float64  `json:"cpu_s_per_1000_packets"`

	VerifyCeilingPerS       float64 `json:"verify_ceiling_per_s"`
	VerifyCeilingSinglePerS float64 `json:"verify_ceiling_single_per_s"`
	VerifyCeilingBatchPerS  float64 `json:"verify_ceiling_batch_per_s"`
	KafkaCeilingPerS        float64 `json:"kafka_ceiling_records_per_s"`
	QUICCeilingMBps         float64 `json:"quic_ceiling_mb_per_s"`
	PerPacketBaselinePerS   float64 `json:"per_packet_baseline_per_s"`
	PerPacketBaselineTx     string  `json:"per_packet_baseline_tx"`
	RatioVerify             float64 `json:"ratio_verify"`
	RatioVerifySingle       float64 `json:"ratio_verify_single"`
	VerifiesPerPacket       int     `json:"verifies_per_packet"`
	RatioVerifyPerRelay     float64 `json:"ratio_verify_per_relay"`
	RatioBaseline           float64 `json:"ratio_baseline"`

	// The window's CPU by part of the cluster (a CPU profile with pprof
	// labels; see cpushare.go), and what the relays alone cost.
	CPUByPart             []CPUShare `json:"cpu_by_part,omitempty"`
	RelayCPUSPer1000      float64    `json:"relay_cpu_s_per_1000_packets,omitempty"`
	VerifyShareOfRelayCPU float64    `json:"verify_share_of_relay_cpu,omitempty"`
	RelayCeilingPerS      float64    `json:"relay_ceiling_per_s,omitempty"`
	RatioVerifyRelay      float64    `json:"ratio_verify_relay,omitempty"`

	Sent       uint64 `json:"sent"`
	Delivered  uint64 `json:"delivered"`
	Receipted  uint64 `json:"receipted"`
	Rejected   uint64 `json:"rejected"`
	Lost       int64  `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	Anchored   uint64 `json:"anchored_packets"`
	Confirmed  uint64 `json:"confirmed_packets"`

	// With RunOptions.ClickHouse: the sink's acknowledged rows per second
	// of the window, the largest consumer lag it measured in the window
	// and its lag at the window's end (records not yet in ClickHouse), and
	// the ledger's rows per table after the drain (read with FINAL).
	AnalyticsSinkRowsPerS *float64          `json:"analytics_sink_rows_per_s,omitempty"`
	AnalyticsSinkMaxLag   *int64            `json:"analytics_sink_max_lag,omitempty"`
	AnalyticsSinkLagEnd   *int64            `json:"analytics_sink_lag_window_end,omitempty"`
	AnalyticsRows         map[string]uint64 `json:"analytics_rows,omitempty"`

	RSSMBWindowStart float64     `json:"rss_mb_window_start"`
	RSSMBWindowEnd   float64     `json:"rss_mb_window_end"`
	RSSSamples       []RSSSample `json:"rss_samples,omitempty"`
	Notes            []string    `json:"notes"`
}

// RSSSample is the process's memory at a moment of the window.
type RSSSample struct {
	AtS    float64 `json:"at_s"` // since the window opened
	RSSMB  float64 `json:"rss_mb"`
	HeapMB float64 `json:"heap_mb"`
}

// verifiesPerPacket: in one process, every packet's stage-1 signature is
// verified twice, by the source relay's router and by the destination
// relay (DESIGN §4), on the same cores.
const verifiesPerPacket = 2

// Run measures the whole path: the ceilings first (alone on the cores),
// then an in-process mesh (bench.Cluster), the per-packet baseline on its
// governance node, then traffic of pre-signed packets: a warm-up, the
// measured window, a drain, and the accounting from the destination
// chains' own records.
func Run(ctx context.Context, opts RunOptions) (*Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	// Everything the harness starts runs labelled as the harness unless
	// the cluster labels it as one of its parts (cpushare.go).
	pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels(labelKey, partHarness)))
	defer pprof.SetGoroutineLabels(ctx)
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(opts.Progress, "[%6.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	res := &Result{Suite: string(opts.Suite), GOMAXPROCS: GOMAXPROCS(), Loop: "closed", Mode: "optimistic",
		Pipes: opts.Pipes, Shards: opts.Shards, Payload: opts.Payload, VerifiesPerPacket: verifiesPerPacket, Notes: []string{}}
	if opts.Rate > 0 {
		res.Loop, res.RateTarget = "open", opts.Rate
	}
	if opts.Strict {
		res.Mode = "strict"
	}

	if !opts.SkipCeilings {
		say("ceilings: signature verification, Kafka, QUIC (%s each, GOMAXPROCS %d)", opts.CeilingTime, res.GOMAXPROCS)
		ce, err := MeasureCeilings(ctx, opts.CeilingTime, opts.Payload)
		if err != nil {
			return nil, err
		}
		res.SetCeilings(ce)
		say("verify %.0f/s one by one, %.0f/s in batches; kafka %.0f records/s; quic %.0f MB/s",
			ce.VerifySingle, ce.VerifyBatch, ce.KafkaRecords, ce.QUICMBps)
	}

	// The probe is wired into the cluster before it starts; it learns the
	// chains once they exist.
	var probeMu sync.Mutex
	var pr *probe
	hook := func(b *amdp.Batch, rb *amdp.ReceiptBatch) {
		probeMu.Lock()
		p := pr
		probeMu.Unlock()
		if p != nil {
			// The harness's books, not the relay's work.
			labelled(context.Background(), partHarness, func(context.Context) { p.receipts(b, rb) })
		}
	}
	specs := benchPipes(opts.Pipes, opts.Strict)
	if len(opts.Brokers) > 0 {
		if err := ensureTopics(ctx, opts.Brokers); err != nil {
			return nil, err
		}
	}
	shardOpt := func(rc *router.Config) {
		if opts.BatchPackets > 0 {
			rc.MaxBatchPackets = opts.BatchPackets
		}
		if opts.MaxPoll > 0 {
			rc.MaxPoll = opts.MaxPoll
		}
		if opts.Linger > 0 {
			rc.Linger = opts.Linger
		}
		if opts.NoAnchors {
			rc.Anchors = nil
		}
	}
	if opts.NoAnchors {
		res.note("diagnostic run: routers do not anchor batches (--no-anchors)")
	}
	c, err := StartCluster(ctx, ClusterOptions{
		ChainInterval: opts.ChainInterval, GovInterval: opts.GovInterval, Shards: opts.Shards,
		Pipes:  append(specs, govchain.PipeSpec{ID: baselinePipe, From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}),
		Logger: opts.Logger, Brokers: opts.Brokers, OnReceipts: hook, UntrackedReceipts: true, GovTxEvery: opts.GovTxEvery, ShardOpt: shardOpt,
		// Records older than half a minute are long consumed; dropping
		// them keeps the embedded broker's memory flat over long runs.
		// kfake drops whole segments only (100 MiB each by default, per
		// partition): small segments let retention free memory.
		KafkaOpts: []kfake.Opt{kfake.BrokerConfigs(map[string]string{"log.retention.ms": "30000", "log.segment.bytes": "4194304"})},
		Step:      func(s string) { say("%s", s) },
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()

	if opts.BaselineTxs > 0 {
		say("per-packet baseline: %d %s txs, one per packet, on the same governance node", opts.BaselineTxs, opts.BaselineKind)
		b, err := PerPacketBaseline(ctx, c, opts.BaselineKind, opts.BaselineTxs)
		if err != nil {
			return nil, err
		}
		res.PerPacketBaselinePerS, res.PerPacketBaselineTx = b.PerSecond, b.Kind
		if b.Rejected > 0 {
			res.note("per-packet baseline: %d of %d txs were refused by govchain and are not counted", b.Rejected, b.Txs)
		}
		say("per-packet baseline: %d committed in %.2fs: %.0f packets/s", b.Committed, b.Seconds, b.PerSecond)
	} else {
		res.note("per-packet baseline not measured")
	}

	var led *ledger
	if opts.ClickHouse != "" {
		// After the baseline, so that it measures governance alone; the
		// follower catches up on the baseline's blocks during the warm-up.
		db := fmt.Sprintf("ccgp_bench_%d", time.Now().UnixNano())
		if led, err = startLedger(ctx, c, opts.ClickHouse, db, opts.Logger); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer led.stop(true)
		say("analytics: sink and governance follower writing to ClickHouse %s, database %s (dropped at the end)", opts.ClickHouse, db)
	} else {
		res.note("analytics off: no sink or governance follower ran (--clickhouse runs them)")
	}

	tr, err := newTraffic(ctx, c, specs, opts, &probeMu, &pr)
	if err != nil {
		return nil, err
	}
	tr.ledger = led
	defer tr.stop()
	if err := tr.measure(ctx, res, opts, say); err != nil {
		return nil, err
	}
	res.finish()
	say("done: %.0f packets/s end to end, p99 to delivered %s", res.E2EPacketsPerS, fmtMs(res.P99DeliveredMs))
	return res, nil
}

// SetCeilings fills the ceilings and the ratios that depend on them.
func (r *Result) SetCeilings(ce Ceilings) {
	r.VerifyCeilingSinglePerS, r.VerifyCeilingBatchPerS = ce.VerifySingle, ce.VerifyBatch
	// The relays verify in batches (crypto.VerifyBatch): that is their
	// ceiling.
	r.VerifyCeilingPerS = ce.VerifyBatch
	r.KafkaCeilingPerS, r.QUICCeilingMBps = ce.KafkaRecords, ce.QUICMBps
	r.finish()
}

// finish computes the ratios from what is set.
func (r *Result) finish() {
	r.RatioVerify, r.RatioVerifySingle, r.RatioVerifyPerRelay, r.RatioBaseline = 0, 0, 0, 0
	if r.VerifyCeilingPerS > 0 {
		r.RatioVerify = round3(r.E2EPacketsPerS / r.VerifyCeilingPerS)
		r.RatioVerifyPerRelay = round3(r.E2EPacketsPerS * float64(r.VerifiesPerPacket) / r.VerifyCeilingPerS)
	}
	if r.VerifyCeilingSinglePerS > 0 {
		r.RatioVerifySingle = round3(r.E2EPacketsPerS / r.VerifyCeilingSinglePerS)
	}
	if r.PerPacketBaselinePerS > 0 {
		r.RatioBaseline = round3(r.E2EPacketsPerS / r.PerPacketBaselinePerS)
	}
	r.RelayCeilingPerS, r.RatioVerifyRelay = 0, 0
	if r.RelayCPUSPer1000 > 0 {
		// The rate the relays' own work would allow on these cores, with
		// the chains, the broker and governance on machines of their own
		// as deployed; both relays of a packet verify its signature.
		r.RelayCeilingPerS = round1(float64(r.GOMAXPROCS) * 1000 / r.RelayCPUSPer1000)
		if r.VerifyCeilingPerS > 0 {
			r.RatioVerifyRelay = round3(r.RelayCeilingPerS * float64(r.VerifiesPerPacket) / r.VerifyCeilingPerS)
		}
	}
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// benchPipes spreads n pipes over the six ordered pairs of participants,
// so that every relay sends and receives.
func benchPipes(n int, strict bool) []govchain.PipeSpec {
	pairs := [][2]string{{"org-1", "org-2"}, {"org-2", "org-4"}, {"org-4", "org-1"}, {"org-2", "org-1"}, {"org-1", "org-4"}, {"org-4", "org-2"}}
	mode := govchain.ConsistencyMode_MODE_OPTIMISTIC
	if strict {
		mode = govchain.ConsistencyMode_MODE_STRICT
	}
	out := make([]govchain.PipeSpec, n)
	for i := range out {
		pr := pairs[i%len(pairs)]
		out[i] = govchain.PipeSpec{ID: fmt.Sprintf("bench-%s-%s-%d", pr[0][4:], pr[1][4:], i/len(pairs)), From: pr[0], To: pr[1], Mode: mode,
			Limits: &govchain.PipeLimits{MaxPayload: 64 << 10}}
	}
	return out
}

// traffic is the load on a running cluster and everything that watches
// it.
type traffic struct {
	c       *Cluster
	chains  []*simchain.Chain
	feeds   []*pipeFeed
	feeders []*feeder
	clock   *chainClock
	probe   *probe
	watch   *govWatch
	wire    *wireSampler
	ledger  *ledger // nil without analytics

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newTraffic(ctx context.Context, c *Cluster, specs []govchain.PipeSpec, opts RunOptions, probeMu *sync.Mutex, prp **probe) (*traffic, error) {
	t := &traffic{c: c}
	idx := map[string]int{}
	relayChain := map[string]int{}
	for i, o := range clusterOrgs {
		idx[o.org] = i
		relayChain["relay-"+o.org] = i
		t.chains = append(t.chains, c.Chains[o.org])
	}
	t.clock = newChainClock(t.chains)
	t.wire = newWireSampler(32)
	feeds := map[string]*pipeFeed{}
	t.feeders = make([]*feeder, len(t.chains))
	for i, ch := range t.chains {
		t.feeders[i] = &feeder{chain: ch, n: ch.Stats().Requests, wake: make(chan struct{}, 1)}
	}
	for _, ps := range specs {
		app := c.part(ps.From).AppKey
		if app.Suite() != opts.Suite {
			return nil, fmt.Errorf("bench: the apps' keys are %s, not %s", app.Suite(), opts.Suite)
		}
		addr := crypto.SignerAddress(app)
		src := idx[ps.From]
		f := &pipeFeed{id: ps.ID, src: src, dst: idx[ps.To], signer: app, payload: opts.Payload,
			cred: &amdp.Credential{Signer: addr[:], Suite: string(app.Suite())}, ring: make([]ringEntry, ringSize),
			signed: t.chains[src].NextSequence(ps.ID) - 1}
		feeds[ps.ID] = f
		t.feeds = append(t.feeds, f)
		t.feeders[src].pipes = append(t.feeders[src].pipes, f)
	}
	t.probe = &probe{clock: t.clock, feeds: feeds, relayChain: relayChain, wire: t.wire, wakeAll: func() {
		for _, fd := range t.feeders {
			select {
			case fd.wake <- struct{}{}:
			default:
			}
		}
	}}
	h0, err := c.Gov.Height(ctx)
	if err != nil {
		return nil, err
	}
	t.watch = newGovWatch(c.Gov, t.probe, t.clock)
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancel = cancel
	t.wg.Go(func() { t.clock.run(bctx) })
	t.wg.Go(func() { _ = t.wire.run(bctx) })
	t.wg.Go(func() {
		if err := t.watch.run(bctx, h0); err != nil {
			opts.Logger.Warn("governance watcher stopped", "err", err)
		}
	})
	// Kafka's retention runs in the cluster (ApplyRetentionEvery).
	probeMu.Lock()
	*prp = t.probe
	probeMu.Unlock()
	return t, nil
}

func (t *traffic) stop() {
	t.cancel()
	t.wg.Wait()
}

// feeding runs the feeders until stop is called; done reports when every
// feeder returned, with the first error (errExhausted when the pre-signed
// packets ran out).
type feeding struct {
	cancel context.CancelFunc
	done   chan error
}

func (t *traffic) feed(ctx context.Context, opts RunOptions) *feeding {
	fctx, cancel := context.WithCancel(ctx)
	fg := &feeding{cancel: cancel, done: make(chan error, 1)}
	ratePerPipe := float64(opts.Rate) / float64(len(t.feeds))
	go func() {
		errs := make([]error, len(t.feeders))
		var wg sync.WaitGroup
		for i, fd := range t.feeders {
			if len(fd.pipes) == 0 {
				continue
			}
			wg.Go(func() {
				if opts.Rate > 0 {
					errs[i] = fd.runOpen(fctx, ratePerPipe)
				} else {
					errs[i] = fd.runClosed(fctx, opts.Window)
				}
			})
		}
		wg.Wait()
		fg.done <- errors.Join(errs...)
	}()
	return fg
}

// stop ends the feeding and waits for the feeders.
func (fg *feeding) stop() error {
	fg.cancel()
	err := <-fg.done
	fg.done <- err // stop may be called again
	return err
}

func (t *traffic) submitted() uint64 {
	var n uint64
	for _, f := range t.feeds {
		n += f.submitted.Load()
	}
	return n
}

func (t *traffic) receiptedCount() uint64 { return t.probe.nReceipted.Load() }

// chainTotals sums the destination chains' own counters.
func (t *traffic) chainTotals() (delivered, rejected, duplicates uint64) {
	for _, ch := range t.chains {
		st := ch.Stats()
		delivered += st.Delivered
		rejected += st.Rejected
		duplicates += st.Duplicates
	}
	return
}

// snapshot is every counter the window is the difference of.
type snapshot struct {
	at                       time.Time
	receipted, delivered     uint64
	anchored, confirmed, txs uint64
	proc                     procSample
}

func (t *traffic) snap() snapshot {
	d, _, _ := t.chainTotals()
	return snapshot{at: time.Now(), receipted: t.receiptedCount(), delivered: d, anchored: t.watch.opened.Load(),
		confirmed: t.watch.confirmd.Load(), txs: t.watch.txs.Load(), proc: sampleProc()}
}

// measure runs warm-up, window and drain, and fills res.
func (t *traffic) measure(ctx context.Context, res *Result, opts RunOptions, say func(string, ...any)) error {
	perPipe := func(total int) int { return (total + len(t.feeds) - 1) / len(t.feeds) }
	var fg *feeding
	progress := t.progress(say)
	if opts.SignLive {
		if opts.Rate == 0 {
			return errors.New("bench: signing live needs an open loop (--rate)")
		}
		for _, f := range t.feeds {
			f.live = true
		}
		res.note("packets were signed as they were sent: the apps' signing shared the cores")
		say("open loop at %d packets/s, signing live: warm-up %s", opts.Rate, opts.Warmup)
		fg = t.feed(ctx, opts)
		if err := t.wait(ctx, fg, opts.Warmup, progress); err != nil {
			return err
		}
	} else if opts.Rate > 0 {
		n := min(opts.MaxPresign, int(float64(opts.Rate)*(opts.Warmup+opts.Duration+2*time.Second).Seconds()))
		say("signing %d packets (%d pipes, %d-byte payloads) before the clock starts", n, len(t.feeds), opts.Payload)
		if err := presign(t.feeds, perPipe(n)); err != nil {
			return err
		}
		say("open loop at %d packets/s: warm-up %s", opts.Rate, opts.Warmup)
		fg = t.feed(ctx, opts)
		if err := t.wait(ctx, fg, opts.Warmup, progress); err != nil {
			return err
		}
	} else {
		// Closed loop: sign enough for the warm-up at a generous guess,
		// measure the rate in its second half, then sign for the window.
		guess := 30000 * opts.Warmup.Seconds()
		n := min(opts.MaxPresign, int(guess))
		say("signing %d packets (%d pipes, %d-byte payloads) for the warm-up", n, len(t.feeds), opts.Payload)
		if err := presign(t.feeds, perPipe(n)); err != nil {
			return err
		}
		say("closed loop, %d packets in flight per pipe: warm-up %s", opts.Window, opts.Warmup)
		fg = t.feed(ctx, opts)
		if err := t.wait(ctx, fg, opts.Warmup/2, progress); err != nil {
			return err
		}
		r0, t0 := t.receiptedCount(), time.Now()
		if err := t.wait(ctx, fg, opts.Warmup/2, progress); err != nil {
			return err
		}
		rate := float64(t.receiptedCount()-r0) / time.Since(t0).Seconds()
		if err := fg.stop(); err != nil && !errors.Is(err, errExhausted) {
			return err
		}
		const rewarm = 2 * time.Second
		pending := 0
		for _, f := range t.feeds {
			pending += f.pending()
		}
		need := int(2*math.Max(rate, 1000)*(opts.Duration+rewarm).Seconds()) - pending
		need = min(need, opts.MaxPresign-int(t.submitted())-pending)
		say("warm-up rate %.0f packets/s; signing %d more packets for the window (feeding paused)", rate, max(need, 0))
		if err := presign(t.feeds, perPipe(need)); err != nil {
			return err
		}
		fg = t.feed(ctx, opts)
		if err := t.wait(ctx, fg, rewarm, progress); err != nil {
			return err
		}
	}

	if t.receiptedCount() == 0 {
		return errors.New("bench: no packet was receipted during the warm-up: the mesh is not moving (see the relays' logs, --log-level warn)")
	}

	// The window.
	for _, h := range []*Histogram{&t.probe.delivered, &t.probe.receipted, &t.probe.anchored, &t.probe.confirmed} {
		h.Reset()
	}
	t.probe.recording.Store(true)
	// Every run profiles its window: the profile splits the CPU by part
	// (cpushare.go). --cpuprofile gets a copy.
	var prof bytes.Buffer
	profiling := false
	stopProfile := func() {
		if profiling {
			pprof.StopCPUProfile()
			profiling = false
		}
	}
	defer stopProfile()
	if err := profileTo(&prof, opts.CPUProfile); err != nil {
		if opts.CPUProfile != nil {
			return fmt.Errorf("bench: cpu profile: %w", err)
		}
		res.note("no CPU breakdown: %v", err) // another profile is running
	} else {
		profiling = true
	}
	if err := writeHeapProfile(opts.MemProfile, false); err != nil {
		return err
	}
	say("measuring for %s", opts.Duration)
	var rows0 uint64
	if t.ledger != nil {
		t.ledger.resetMaxLag()
		rows0 = t.ledger.sinkRows()
	}
	s0 := t.snap()
	res.RSSMBWindowStart = mb(s0.proc.rssBytes)
	wctx, wcancel := context.WithTimeout(ctx, opts.Duration)
	rssTick := time.NewTicker(time.Minute)
	exhausted := false
	for wctx.Err() == nil {
		select {
		case <-wctx.Done():
		case <-rssTick.C:
			p := sampleProc()
			res.RSSSamples = append(res.RSSSamples, RSSSample{AtS: math.Round(time.Since(s0.at).Seconds()), RSSMB: mb(p.rssBytes), HeapMB: mb(p.heapBytes)})
			say("memory: RSS %.1f MiB, live heap %.1f MiB", mb(p.rssBytes), mb(p.heapBytes))
		case <-time.After(time.Second):
			progress()
		case err := <-fg.done:
			fg.done <- err
			if err != nil && !errors.Is(err, errExhausted) {
				wcancel()
				rssTick.Stop()
				return err
			}
			exhausted = true
			wcancel()
		}
	}
	wcancel()
	rssTick.Stop()
	s1 := t.snap()
	stopProfile()
	if t.ledger != nil {
		rps := round1(float64(t.ledger.sinkRows()-rows0) / s1.at.Sub(s0.at).Seconds())
		maxLag, lagEnd := t.ledger.MaxLag(), t.ledger.sink.Stats().Lag
		res.AnalyticsSinkRowsPerS, res.AnalyticsSinkMaxLag, res.AnalyticsSinkLagEnd = &rps, &maxLag, &lagEnd
	}
	if err := writeHeapProfile(opts.MemProfile, true); err != nil {
		return err
	}
	t.probe.recording.Store(false)
	if exhausted {
		res.note("the pre-signed packets ran out %.1fs into the window: the window was cut short", s1.at.Sub(s0.at).Seconds())
	}
	if err := fg.stop(); err != nil && !errors.Is(err, errExhausted) {
		return err
	}

	win := s1.at.Sub(s0.at).Seconds()
	res.WindowS = round3(win)
	res.RSSMBWindowEnd = mb(s1.proc.rssBytes)
	pkts := s1.receipted - s0.receipted
	res.PacketsInWindow = pkts
	res.ReceiptedPerS = round1(float64(pkts) / win)
	res.DeliveredPerS = round1(float64(s1.delivered-s0.delivered) / win)
	res.E2EPacketsPerS = res.ReceiptedPerS
	anchoring := s1.anchored > s0.anchored
	if anchoring {
		a := round1(float64(s1.anchored-s0.anchored) / win)
		res.AnchoredPerS = &a
		res.E2EPacketsPerS = math.Min(res.ReceiptedPerS, a)
	} else {
		res.note("no open-batch anchors of the traffic were committed in the window: e2e counts receipted packets only")
	}
	if s1.confirmed > s0.confirmed {
		cr := round1(float64(s1.confirmed-s0.confirmed) / win)
		res.ConfirmedPerS = &cr
	} else {
		res.note("no batches were confirmed on govchain in the window: latency to confirmed is null")
	}
	if pkts > 0 {
		res.ChainTxsInWindow = s1.txs - s0.txs
		res.ChainTxsPerPacket = round6(float64(res.ChainTxsInWindow) / float64(pkts))
		res.AllocsPerPacket = round1(float64(s1.proc.allocs-s0.proc.allocs) / float64(pkts))
		res.AllocBytesPerPkt = round1(float64(s1.proc.allocB-s0.proc.allocB) / float64(pkts))
		res.CPUSPer1000 = round3((s1.proc.cpu - s0.proc.cpu).Seconds() / float64(pkts) * 1000)
		if err := res.applyCPU(prof.Bytes(), pkts); err != nil {
			res.note("no CPU breakdown: %v", err)
		}
	}
	pr := t.probe
	res.P50DeliveredMs, res.P99DeliveredMs, res.P999DeliveredMs = q(&pr.delivered, 0.5), q(&pr.delivered, 0.99), q(&pr.delivered, 0.999)
	res.P50ReceiptedMs, res.P99ReceiptedMs, res.P999ReceiptedMs = q(&pr.receipted, 0.5), q(&pr.receipted, 0.99), q(&pr.receipted, 0.999)
	res.P50AnchoredMs, res.P99AnchoredMs = q(&pr.anchored, 0.5), q(&pr.anchored, 0.99)
	res.P50ConfirmedMs, res.P99ConfirmedMs, res.P999ConfirmedMs = q(&pr.confirmed, 0.5), q(&pr.confirmed, 0.99), q(&pr.confirmed, 0.999)
	if n := pr.untimed.Load(); n > 0 {
		res.note("%d receipts could not be timed (ring overrun or clock gap)", n)
	}
	if per, ratio, n := t.wire.result(); n > 0 {
		res.WireBytesPerPacket, res.ZstdRatio = round1(per), round3(ratio)
	} else {
		res.note("no batch was sampled for wire bytes")
	}

	// Drain, then account from the destination chains' records.
	say("draining: waiting for every submitted packet's receipt")
	sent := t.submitted()
	dctx, dcancel := context.WithTimeout(ctx, 60*time.Second)
	defer dcancel()
	for t.receiptedCount() < sent && dctx.Err() == nil {
		select {
		case <-dctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got := t.receiptedCount(); got < sent {
		res.note("drain timed out: %d of %d packets without receipts", sent-got, sent)
	}
	// Receipts come after the destination block commits; give the chains'
	// counters a block to settle.
	time.Sleep(2 * opts.ChainInterval)
	delivered, _, dups := t.chainTotals()
	// Refused by a router (the Tracker) or answered with a receipt other
	// than delivered (the probe): disjoint, since the Tracker is not told
	// of receipts here.
	rejected := uint64(t.c.Tracker.RejectedCount()) + t.probe.nRejected.Load()
	res.Sent, res.Delivered, res.Receipted, res.Rejected, res.Duplicated = sent, delivered, t.receiptedCount(), rejected, dups
	res.Lost = int64(sent) - int64(delivered) - int64(rejected)
	if res.Lost < 0 {
		res.note("destination chains report %d more deliveries than packets sent", -res.Lost)
		res.Lost = 0
	}
	res.Anchored, res.Confirmed = t.watch.opened.Load(), t.watch.confirmd.Load()
	if n := t.watch.errs.Load(); n > 0 {
		res.note("%d governance blocks could not be read by the watcher", n)
	}
	if t.ledger != nil {
		return t.ledgerRows(ctx, res, sent, say)
	}
	return nil
}

// ledgerRows waits (at most 30 s) for the sink to hold every packet sent
// and its receipt, and reads the ledger's rows per table. The embedded broker keeps
// records 30 s: a sink further behind than that has lost some, and the
// note says so.
func (t *traffic) ledgerRows(ctx context.Context, res *Result, sent uint64, say func(string, ...any)) error {
	if err := t.ledger.failed(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	say("analytics: waiting for the ledger to hold the %d packets sent and their receipts", sent)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for st := t.ledger.sink.Stats(); wctx.Err() == nil && (st.Packets < sent || st.Receipts < sent); st = t.ledger.sink.Stats() {
		select {
		case <-wctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	lc, err := t.ledger.counts(ctx)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	res.AnalyticsRows = lc.Rows
	if lc.Rows["packets"] < sent || lc.Rows["receipts"] < sent {
		res.note("the analytics ledger holds %d packets and %d receipts of %d packets sent 30 s after the drain",
			lc.Rows["packets"], lc.Rows["receipts"], sent)
	}
	return nil
}

// writeHeapProfile writes the allocation profile to open's writer.
func writeHeapProfile(open func(end bool) (io.WriteCloser, error), end bool) error {
	if open == nil {
		return nil
	}
	w, err := open(end)
	if err != nil {
		return fmt.Errorf("bench: memory profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(w, 0); err != nil {
		w.Close()
		return fmt.Errorf("bench: memory profile: %w", err)
	}
	return w.Close()
}

// wait lets traffic run for d, printing progress each second; it returns
// early, without error, when the pre-signed packets run out.
func (t *traffic) wait(ctx context.Context, fg *feeding, d time.Duration, progress func()) error {
	end := time.After(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end:
			return nil
		case <-tick.C:
			progress()
		case err := <-fg.done:
			fg.done <- err
			if err != nil && !errors.Is(err, errExhausted) {
				return err
			}
			return nil
		}
	}
}

// progress returns a function printing one progress line.
func (t *traffic) progress(say func(string, ...any)) func() {
	last, lastAt := uint64(0), time.Now()
	return func() {
		r := t.receiptedCount()
		now := time.Now()
		rate := float64(r-last) / now.Sub(lastAt).Seconds()
		last, lastAt = r, now
		p99 := "-"
		if t.probe.recording.Load() {
			p99 = fmtMs(q(&t.probe.delivered, 0.99))
		}
		say("submitted %9d  receipted %9d  %7.0f/s  anchored %9d  confirmed %9d  gov txs %6d  p99 delivered %s",
			t.submitted(), r, rate, t.watch.opened.Load(), t.watch.confirmd.Load(), t.watch.txs.Load(), p99)
	}
}

func q(h *Histogram, p float64) *float64 {
	v := h.Quantile(p)
	if math.IsNaN(v) {
		return nil
	}
	v = round3(v)
	return &v
}

func fmtMs(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", *v)
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }
