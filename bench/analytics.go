package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
)

// partAnalytics labels the ledger's writers (the sink and the governance
// follower). In a deployment they are another process: the label keeps
// their CPU out of the relays' figures.
const partAnalytics = "analytics"

// LedgerTables are the tables the in-process writers fill, in the order
// the summaries print them.
func LedgerTables() []string {
	return []string{"packets", "receipts", "batches", "offenders", "governance", "anchors", "exceptions"}
}

// ledger runs analytics.Sink and analytics.GovFollower in this process
// against a cluster's broker and governance client, into a database of
// its own, until stop.
type ledger struct {
	conn  driver.Conn
	db    string
	sink  *analytics.Sink
	gov   *analytics.GovFollower
	start time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex // guards err
	err    error      // the first writer's error, if one stopped

	lagMu  sync.Mutex // guards maxLag
	maxLag int64      // the largest consumer lag the sink measured
}

// startLedger connects to the ClickHouse server at addr, migrates db and
// starts the sink and the follower, under the analytics label. The sink
// measures its lag every second (its default is 10 s) so that a short
// run sees its largest lag.
func startLedger(ctx context.Context, c *Cluster, addr, db string, log *slog.Logger) (_ *ledger, err error) {
	l := &ledger{db: db, start: time.Now()}
	labelled(ctx, partAnalytics, func(ctx context.Context) { err = l.open(ctx, c, addr, log) })
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (l *ledger) open(ctx context.Context, c *Cluster, addr string, log *slog.Logger) (err error) {
	if l.conn, err = analytics.Connect(ctx, addr); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			l.conn.Close()
		}
	}()
	// The follower writes into migrated tables: migrate before either
	// starts (the sink's own Migrate is then a no-op).
	if _, err := analytics.Migrate(ctx, l.conn, l.db); err != nil {
		return err
	}
	l.sink, err = analytics.NewSink(analytics.SinkConfig{Brokers: c.Brokers(), Conn: l.conn, Database: l.db,
		Group: "ccgp-analytics-" + l.db, Pipes: c.Gov, Log: log, ReportEvery: time.Second})
	if err != nil {
		return err
	}
	l.gov, err = analytics.NewGovFollower(analytics.GovFollowerConfig{Chain: c.Gov, Conn: l.conn, DB: l.db, Log: log})
	if err != nil {
		return err
	}
	// The writers outlive the caller's ctx only until stop.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	for _, w := range []struct {
		name string
		run  func(context.Context) error
	}{{"sink", l.sink.Run}, {"governance follower", l.gov.Run}, {"lag watch", l.watchLag}} {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := w.run(rctx); err != nil && rctx.Err() == nil {
				l.errMu.Lock()
				if l.err == nil {
					l.err = fmt.Errorf("analytics %s: %w", w.name, err)
				}
				l.errMu.Unlock()
			}
		}()
	}
	return nil
}

// watchLag keeps the largest lag the sink has measured until ctx ends.
func (l *ledger) watchLag(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		lag := l.sink.Stats().Lag
		l.lagMu.Lock()
		l.maxLag = max(l.maxLag, lag)
		l.lagMu.Unlock()
	}
}

// failed is the error of a writer that stopped by itself, if one did.
func (l *ledger) failed() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// MaxLag is the largest consumer lag the sink measured so far.
func (l *ledger) MaxLag() int64 {
	l.lagMu.Lock()
	defer l.lagMu.Unlock()
	return l.maxLag
}

// resetMaxLag starts a new measure of the largest lag.
func (l *ledger) resetMaxLag() {
	l.lagMu.Lock()
	l.maxLag = 0
	l.lagMu.Unlock()
}

// sinkRows is every row ClickHouse acknowledged from the sink.
func (l *ledger) sinkRows() uint64 {
	st := l.sink.Stats()
	return st.Packets + st.Receipts + st.Batches + st.Offenders
}

// stop ends the writers (each flushes what it holds) and closes the
// connection; drop also drops the database.
func (l *ledger) stop(drop bool) error {
	l.cancel()
	l.wg.Wait()
	if drop {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+l.db+"`"); err != nil {
			l.conn.Close()
			return fmt.Errorf("analytics: drop database %s: %w", l.db, err)
		}
	}
	return errors.Join(l.failed(), l.conn.Close())
}

// LedgerCounts is what the ledger holds, read with FINAL: one row per
// record, whatever the sink wrote twice.
type LedgerCounts struct {
	Rows              map[string]uint64 // per table
	ReceiptsDelivered uint64            // receipts with status DELIVERED
	OffendersProven   uint64
	GovRefused        uint64 // governance txs with a non-zero code
}

// counts reads the ledger's tables.
func (l *ledger) counts(ctx context.Context) (LedgerCounts, error) {
	lc := LedgerCounts{Rows: map[string]uint64{}}
	q := "`" + l.db + "`."
	for _, t := range LedgerTables() {
		var n uint64
		if err := l.conn.QueryRow(ctx, "SELECT count() FROM "+q+t+" FINAL").Scan(&n); err != nil {
			return lc, fmt.Errorf("analytics: count %s: %w", t, err)
		}
		lc.Rows[t] = n
	}
	for _, s := range []struct {
		dst  *uint64
		stmt string
	}{
		{&lc.ReceiptsDelivered, "SELECT countIf(status = 'DELIVERED') FROM " + q + "receipts FINAL"},
		{&lc.OffendersProven, "SELECT countIf(proven = 1) FROM " + q + "offenders FINAL"},
		{&lc.GovRefused, "SELECT countIf(code != 0) FROM " + q + "governance FINAL"},
	} {
		if err := l.conn.QueryRow(ctx, s.stmt).Scan(s.dst); err != nil {
			return lc, fmt.Errorf("analytics: %s: %w", s.stmt, err)
		}
	}
	return lc, nil
}

// reports fills the end of the demo's analytics block: the run reconciled
// against the chains' own records (from `from`, before the first packet,
// to now), the anomaly rules evaluated once over the ledger (with that
// reconciliation as the reconciliation rule's input), and every party's
// credit score for the run.
func (l *ledger) reports(ctx context.Context, c *Cluster, from time.Time, a *DemoAnalytics, say func(string, ...any)) error {
	if a == nil {
		return nil
	}
	chains := map[string]subchain.Records{}
	for _, ch := range c.Chains {
		chains[ch.ID()] = ch
	}
	reconcile := func(ctx context.Context, from, to time.Time) (*analytics.Reconciliation, error) {
		r, err := analytics.Reconcile(ctx, analytics.ReconcileInput{Conn: l.conn, Database: l.db, From: from, To: to, Chains: chains})
		return &r, err
	}
	to := time.Now().Add(time.Second)
	r, err := reconcile(ctx, from, to)
	if err != nil {
		return fmt.Errorf("bench: reconcile the run: %w", err)
	}
	a.Reconciliation = r
	say("reconciliation of the run against the chains' records: %d differences", r.Found)
	w, err := analytics.NewWatcher(ctx, analytics.WatcherConfig{Conn: l.conn, DB: l.db, Rules: analytics.DefaultRules(),
		Lag: func() (int64, bool) { st := l.sink.Stats(); return st.Lag, !st.LagAt.IsZero() },
		Reconcile: func(ctx context.Context, from, to time.Time) (int, error) {
			r, err := reconcile(ctx, from, to)
			if err != nil {
				return 0, err
			}
			return r.Found, nil
		}})
	if err != nil {
		return err
	}
	if a.Anomalies, err = w.Evaluate(ctx); err != nil {
		return fmt.Errorf("bench: anomaly rules: %w", err)
	}
	if a.Credit, err = analytics.Credit(ctx, l.conn, l.db, analytics.CreditWindow{Start: from, End: to, Grace: time.Second}); err != nil {
		return fmt.Errorf("bench: credit scores: %w", err)
	}
	say("anomaly rules evaluated: %d open; credit scored for %d parties", len(a.Anomalies), len(a.Credit))
	return nil
}
