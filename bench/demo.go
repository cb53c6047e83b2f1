package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// DemoOptions configures RunDemo.
type DemoOptions struct {
	Out      io.Writer // progress and the human summary; nil discards
	Rate     int       // packets per second over all pipes, default 1000
	Duration time.Duration
	Payload  int // bytes per packet, default 256
	// KeepRunning sends until ctx ends instead of for Duration.
	KeepRunning bool
	// BulkTxs, if set, also measures a burst of governance txs.
	BulkTxs int
	Logger  *slog.Logger
	Brokers []string // a real Kafka cluster instead of the embedded broker
	// Mode is every pipe's consistency mode: "optimistic" (default) or "strict".
	Mode string
	// Dir keeps the platform's state (the chains, the governance node, the
	// relays' stores) after the run, for inspection; "" uses a temporary
	// directory removed at the end.
	Dir string
	// ClickHouse, if set, is a server's native address: the demo runs the
	// analytics sink and the governance follower in-process into Database
	// (default ccgp_demo_<unix time>, created and migrated) and summarises
	// the ledger. Empty: analytics is skipped, with a line saying how to
	// get a server.
	ClickHouse string
	Database   string
}

// AnalyticsHowTo is how to run the demo with analytics, for the line that
// says it was skipped.
const AnalyticsHowTo = "apt-get install clickhouse-server; ccgp demo --clickhouse $(.ci/clickhouse start /tmp/ch)  (or: make demo)"

// DemoAnalytics is what the ledger holds at the end of the demo, read
// back from ClickHouse with FINAL, beside the demo's own figures.
type DemoAnalytics struct {
	Database string            `json:"database"`
	Rows     map[string]uint64 `json:"rows"` // per table
	// CaughtUp is whether the ledger held every packet, receipt and
	// governance block within the bounded wait (CatchUpS after the drain).
	CaughtUp          bool    `json:"caught_up"`
	CatchUpS          float64 `json:"catch_up_s"`
	PacketsSent       int     `json:"packets_sent"`
	PacketsInLedger   uint64  `json:"packets_in_ledger"`
	ReceiptsDelivered uint64  `json:"receipts_delivered"`
	OffendersProven   uint64  `json:"offenders_proven"`
	OffendersClaimed  uint64  `json:"offenders_claimed"` // reported, not proven
	GovernanceTxs     uint64  `json:"governance_txs"`
	GovernanceRefused uint64  `json:"governance_refused"`
	GovHeight         int64   `json:"governance_height"` // the follower's last written height
	// SinkRowsPerS is the sink's acknowledged rows over its life (from
	// its start to the ledger caught up); MaxLag the largest consumer lag
	// it measured (records not yet in ClickHouse).
	SinkRowsPerS float64 `json:"sink_rows_per_s"`
	SinkRows     uint64  `json:"sink_rows"`
	MaxLag       int64   `json:"sink_max_lag"`

	// The ledger's reports at the end of the run: reconciliation of the
	// run against the chains' own records (clean when nothing differs),
	// the anomaly rules evaluated once, and every party's credit score.
	Reconciliation *analytics.Reconciliation `json:"reconciliation,omitempty"`
	Anomalies      []analytics.Anomaly       `json:"anomalies"`
	Credit         []analytics.CreditScore   `json:"credit"`
}

// DemoSummary is the demo's result; `ccgp demo --json` prints it. Lost and
// duplicated come from the destination chains' own delivery records.
type DemoSummary struct {
	PacketsSent      int     `json:"packets_sent"`
	PacketsDelivered int     `json:"packets_delivered"`
	Receipts         int     `json:"receipts"`
	Lost             int     `json:"lost"`
	Duplicated       int     `json:"duplicated"`
	Rejected         int     `json:"rejected"`
	Confirmed        int     `json:"confirmed"`
	RolledBack       int     `json:"rolled_back"`
	Manual           int     `json:"manual"`
	Anchors          int     `json:"anchors"`
	PacketsPerAnchor float64 `json:"packets_per_anchor"`
	AnchorLatencyMs  float64 `json:"anchor_latency_ms"`
	Mode             string  `json:"mode"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	DurationS        float64 `json:"duration_s"`
	ThroughputPerS   float64 `json:"throughput_per_s"`
	RateTarget       int     `json:"rate_target_per_s"`
	SendS            float64 `json:"send_s"`

	Pipes          int     `json:"pipes"`
	Relays         int     `json:"relays"`
	Orgs           int     `json:"orgs"`
	SetupTxs       int     `json:"setup_txs"`
	RejectedTxs    int     `json:"governance_rejections_shown"`
	ProofsVerified int     `json:"proofs_verified"`
	GovHeight      int64   `json:"gov_height"`
	BulkTxs        int     `json:"bulk_txs,omitempty"`
	BulkTxPerSec   float64 `json:"bulk_tx_per_s,omitempty"`
	TotalS         float64 `json:"total_s"`

	// Analytics is the ledger's summary with DemoOptions.ClickHouse;
	// AnalyticsSkipped says why there is none.
	Analytics        *DemoAnalytics `json:"analytics,omitempty"`
	AnalyticsSkipped string         `json:"analytics_skipped,omitempty"`
}

// RunDemo runs the whole platform in one process: a governance chain node,
// the embedded Kafka broker, three simulated subchains with their relays,
// the consortium set up through governance (an org admitted by vote,
// accounts voted in, relays, subchains, apps, contracts, pipes applied for
// and authorized), a few txs that governance must refuse, then apps sending
// at opts.Rate for opts.Duration with a progress line each second, and a
// summary computed from the destination chains' own records.
func RunDemo(ctx context.Context, opts DemoOptions) (*DemoSummary, error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if opts.Rate <= 0 {
		opts.Rate = 1000
	}
	if opts.Duration <= 0 {
		opts.Duration = 20 * time.Second
	}
	if opts.Payload <= 0 {
		opts.Payload = 256
	}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%5.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	mode := govchain.ConsistencyMode_MODE_OPTIMISTIC
	if opts.Mode == "strict" {
		mode = govchain.ConsistencyMode_MODE_STRICT
	}
	pipes := DefaultPipes()
	for i := range pipes {
		pipes[i].Mode = mode
	}
	c, err := StartCluster(ctx, ClusterOptions{Dir: opts.Dir, Logger: opts.Logger, Brokers: opts.Brokers, Pipes: pipes, Step: func(s string) { say("%s", s) }})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sum := &DemoSummary{Pipes: len(c.Apps), Relays: len(c.Parts), SetupTxs: c.SetupTxs, RateTarget: opts.Rate,
		Mode: short(mode.String())}
	var led *ledger
	if opts.ClickHouse != "" {
		db := opts.Database
		if db == "" {
			db = fmt.Sprintf("ccgp_demo_%d", time.Now().Unix())
		}
		if led, err = startLedger(ctx, c, opts.ClickHouse, db, opts.Logger); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		// The database stays, for the analyst to query after the demo.
		defer led.stop(false)
		say("analytics: sink and governance follower writing to ClickHouse %s, database %s", opts.ClickHouse, db)
	}

	if err := governanceShowcase(ctx, c, sum, say); err != nil {
		return nil, err
	}
	if opts.BulkTxs > 0 {
		say("governance throughput: %d txs handed to the mempool at once …", opts.BulkTxs)
		r, err := bulk(ctx, c.Gov, c.Gov.ChainID(), opts.BulkTxs)
		if err != nil {
			return nil, err
		}
		sum.BulkTxs, sum.BulkTxPerSec = r.Committed, r.TxPerSecond
		say("%d txs committed in %.2fs over %d blocks: %.0f tx/s", r.Committed, r.Seconds, r.Blocks, r.TxPerSecond)
	}

	if opts.KeepRunning {
		say("sending %d packets/s over %d pipes until Ctrl-C (RPC %s)", opts.Rate, len(c.Apps), c.TestnetRPC)
	} else {
		say("sending %d packets/s of %d bytes over %d pipes for %s", opts.Rate, opts.Payload, len(c.Apps), opts.Duration)
	}
	tctx, stopTraffic := context.WithCancel(ctx)
	if !opts.KeepRunning {
		tctx, stopTraffic = context.WithTimeout(ctx, opts.Duration)
	}
	defer stopTraffic()
	trafficStart := time.Now()
	trafficErr := make(chan error, 1)
	go func() { trafficErr <- c.traffic(tctx, opts.Rate, opts.Payload) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastDelivered := 0
	progress := func() {
		delivered := c.delivered()
		p := c.Tracker.Percentiles(0.99)
		say("sent %7d  delivered %7d  receipted %7d  rate %5d/s  p99 %6.1f ms",
			c.Tracker.SentCount(), delivered, c.Tracker.Receipted(), delivered-lastDelivered, p[0])
		lastDelivered = delivered
	}
loop:
	for {
		select {
		case err := <-trafficErr:
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			break loop
		case <-tick.C:
			progress()
		}
	}
	sendEnd := time.Now()

	// Drain: wait (bounded) until every sent packet is settled on its
	// destination chain and receipted at its source.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var acc Accounting
	for {
		acc, err = c.Account(dctx)
		if err == nil && acc.Delivered+acc.Rejected == acc.Sent && c.Tracker.Receipted() >= acc.Sent &&
			c.Totals().ConfirmedPackets >= acc.Delivered {
			break
		}
		select {
		case <-dctx.Done():
			say("drain timed out: %d of %d packets not settled", acc.Sent-acc.Delivered-acc.Rejected, acc.Sent)
			goto done
		case <-time.After(100 * time.Millisecond):
		case <-tick.C:
			progress()
		}
	}
done:
	progress()
	settled := time.Now()
	p := c.Tracker.Percentiles(0.5, 0.99)
	sum.PacketsSent, sum.PacketsDelivered, sum.Receipts = acc.Sent, acc.Delivered, c.Tracker.Receipted()
	sum.Lost, sum.Duplicated, sum.Rejected = acc.Lost, acc.Duplicated, acc.Rejected
	sum.P50Ms, sum.P99Ms = p[0], p[1]
	sum.DurationS = settled.Sub(trafficStart).Seconds()
	if sum.DurationS > 0 {
		sum.ThroughputPerS = float64(acc.Delivered) / sum.DurationS
	}
	sum.SendS = sendEnd.Sub(trafficStart).Seconds()
	tot := c.Totals()
	sum.Confirmed, sum.RolledBack, sum.Manual = tot.ConfirmedPackets, tot.RolledBack, tot.Manual
	sum.Anchors, sum.AnchorLatencyMs = tot.AnchorTxs, tot.OpenLatencyMs
	if tot.AnchorTxs > 0 {
		sum.PacketsPerAnchor = float64(acc.Sent) / float64(tot.AnchorTxs)
	}
	sum.GovHeight = c.Node.Height()
	if led != nil {
		if sum.Analytics, err = led.catchUp(ctx, sum, say); err != nil {
			return nil, err
		}
		if err := led.reports(ctx, c, trafficStart.Add(-time.Minute), sum.Analytics, say); err != nil {
			return nil, err
		}
	} else {
		sum.AnalyticsSkipped = "no ClickHouse server given"
		say("analytics skipped (no --clickhouse); for the ledger: %s", AnalyticsHowTo)
	}
	sum.TotalS = time.Since(start).Seconds()
	return sum, nil
}

// catchUp waits (at most 20 s, a progress line each second) until the
// ledger holds every packet sent, a receipt for each packet receipted and
// the governance chain up to its height at the drain, then summarises the
// ledger. A writer that failed is an error: the summary would be wrong.
func (l *ledger) catchUp(ctx context.Context, sum *DemoSummary, say func(string, ...any)) (*DemoAnalytics, error) {
	wantPackets := uint64(sum.PacketsSent)
	wantReceipts := uint64(min(sum.Receipts, sum.PacketsSent))
	wantHeight := sum.GovHeight
	begin := time.Now()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lc LedgerCounts
	var err error
	caught := false
	for {
		if err := l.failed(); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		lc, err = l.counts(wctx)
		written := l.gov.Stats().Written
		if err == nil && lc.Rows["packets"] >= wantPackets && lc.Rows["receipts"] >= wantReceipts && written >= wantHeight {
			caught = true
			break
		}
		select {
		case <-wctx.Done():
			say("analytics: the ledger did not catch up within 20 s")
			goto done
		case <-tick.C:
			say("analytics: ledger holds %d/%d packets, %d/%d receipts, governance to height %d/%d",
				lc.Rows["packets"], wantPackets, lc.Rows["receipts"], wantReceipts, written, wantHeight)
		case <-time.After(200 * time.Millisecond):
		}
	}
done:
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	a := &DemoAnalytics{Database: l.db, Rows: lc.Rows, CaughtUp: caught, CatchUpS: round3(time.Since(begin).Seconds()),
		PacketsSent: sum.PacketsSent, PacketsInLedger: lc.Rows["packets"], ReceiptsDelivered: lc.ReceiptsDelivered,
		OffendersProven: lc.OffendersProven, OffendersClaimed: lc.Rows["offenders"] - lc.OffendersProven,
		GovernanceTxs: lc.Rows["governance"], GovernanceRefused: lc.GovRefused, GovHeight: l.gov.Stats().Written,
		SinkRows: l.sinkRows(), MaxLag: l.MaxLag()}
	if secs := time.Since(l.start).Seconds(); secs > 0 {
		a.SinkRowsPerS = round1(float64(a.SinkRows) / secs)
	}
	if caught {
		say("analytics: ledger caught up in %.1fs: %d packets, %d receipts, %d governance txs", a.CatchUpS,
			a.PacketsInLedger, lc.Rows["receipts"], a.GovernanceTxs)
	}
	return a, nil
}

// delivered sums what the destination chains report delivered.
func (c *Cluster) delivered() int {
	n := 0
	for _, ch := range c.Chains {
		n += int(ch.Stats().Delivered)
	}
	return n
}

// traffic has every pipe's app send its share of rate until ctx ends.
func (c *Cluster) traffic(ctx context.Context, rate, payload int) error {
	perPipe := float64(rate) / float64(len(c.Apps))
	var wg sync.WaitGroup
	errs := make(chan error, len(c.Apps))
	for _, app := range c.Apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, payload)
			_, _ = rand.Read(body)
			const step = 10 * time.Millisecond
			t := time.NewTicker(step)
			defer t.Stop()
			start, sent := time.Now(), 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				due := int(perPipe * time.Since(start).Seconds())
				for ; sent < due; sent++ {
					p, err := app.Send(ctx, body)
					if err != nil {
						if ctx.Err() == nil {
							errs <- fmt.Errorf("app on %s: %w", app.Pipe, err)
						}
						return
					}
					c.Tracker.Sent(p)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// governanceShowcase shows governance refusing what it must, in words, and
// reads the pipes back with verified proofs.
func governanceShowcase(ctx context.Context, c *Cluster, sum *DemoSummary, say func(string, ...any)) error {
	parts := c.Parts
	rejections := []govchain.Signed{
		{Signer: parts[2].Admin, Msg: &govchain.MsgAuthorizePipe{Id: "pipe-1-2", DestinationContract: parts[2].Contract}},
		{Signer: parts[0].AppKey, Msg: &govchain.MsgRegisterSubchain{Id: "rogue", Kind: "simchain", RelayId: parts[0].Relay}},
		{Signer: crypto.DevSigner("stranger"), Msg: &govchain.MsgSuspendPipe{Id: "pipe-1-2"}},
	}
	for _, r := range rejections {
		_, err := c.Gov.Submit(ctx, r.Signer, r.Msg)
		var te *govchain.TxError
		if !errors.As(err, &te) {
			return fmt.Errorf("demo: %T must be refused, got %v", r.Msg, err)
		}
		sum.RejectedTxs++
		say("governance refused, as it must: %s", te.Msg)
	}
	for id := range c.Apps {
		p, err := c.Gov.Pipe(ctx, id)
		if err != nil {
			return err
		}
		sum.ProofsVerified++
		say("pipe %-9s %s/%s -> %s/%s %s, %s (read with a verified proof)", p.Id, p.Source.Org, p.Source.Contract,
			p.Destination.Org, p.Destination.Contract, short(p.Status.String()), short(p.Mode.String()))
	}
	orgs, err := govchain.List(ctx, c.Gov, govchain.ListOrgs, func() *govchain.Org { return &govchain.Org{} })
	if err != nil {
		return err
	}
	sum.Orgs = len(orgs)
	return nil
}

func short(enum string) string { return govchain.EnumName(enum) }
