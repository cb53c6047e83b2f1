package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/bench"
)

func newDemoCmd(g *globals) *cobra.Command {
	var o bench.DemoOptions
	var asJSON, noAnalytics bool
	var kafka string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole mesh in one process and summarise",
		Long: `Run the whole platform in one process on 127.0.0.1 with development keys:
a governance chain node (CometBFT + govchain), the embedded Kafka broker
(kfake), three simulated subchains with their relays (QUIC, mutual TLS), and
the consortium set up through governance: an org admitted by vote,
cross-chain accounts voted in, relays, subchains, apps, contracts, and pipes
applied for by the source orgs and authorized by the destination orgs.

Apps then send signed cross-chain requests at --rate for --duration; a
progress line each second shows sent, delivered, receipted, rate and p99.
The summary's lost and duplicated counts come from the destination chains'
own delivery records. --keep-running sends until Ctrl-C.

With --clickhouse (a server's native TCP port, not HTTP 8123) the demo
also runs the analytics sink and the governance follower in-process: it
migrates a fresh database (--database, default ccgp_demo_<unix time>, kept
afterwards for you to query), waits at the end (at most 20 s) until the
ledger holds every packet, receipt and governance tx, and adds an
"analytics" block to the summary: rows per table, packets delivered in the
ledger against packets sent, offenders, governance txs (refused ones
counted), the sink's rows/s and largest lag. Without --clickhouse, or with
--no-analytics, it says analytics was skipped. 'make demo' starts a
throwaway server itself.`,
		Example: `  ccgp demo
  ccgp demo --duration 20s --json
  ccgp demo --rate 5000 --duration 30s
  ccgp demo --keep-running

  # with the analytics ledger (Debian: apt-get install clickhouse-server)
  ccgp demo --clickhouse $(.ci/clickhouse start /tmp/ch)
  clickhouse-client --port PORT -q 'SELECT status, count() FROM ccgp_demo_1764763200.receipts FINAL GROUP BY status'
  .ci/clickhouse stop /tmp/ch`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			switch {
			case o.Rate < 1 || o.Rate > 1_000_000:
				return usagef("--rate must be 1-1000000 packets/s")
			case o.Duration < time.Second || o.Duration > 24*time.Hour:
				return usagef("--duration must be between 1s and 24h")
			case o.Payload < 1 || o.Payload > 64<<10:
				return usagef("--payload must be 1-65536 bytes (the pipes' default limit)")
			case o.Mode != "optimistic" && o.Mode != "strict":
				return usagef("--mode must be optimistic or strict")
			case o.BulkTxs < 0 || o.BulkTxs > 50000:
				return usagef("--bulk-txs must be 0-50000")
			case noAnalytics && o.ClickHouse != "":
				return usagef("--no-analytics and --clickhouse contradict each other")
			case o.Database != "" && o.ClickHouse == "":
				return usagef("--database needs --clickhouse")
			case o.Database != "" && !analytics.ValidDatabase(o.Database):
				return usagef("--database %q: letters, digits and _ only, not starting with a digit", o.Database)
			}
			if kafka != "" {
				o.Brokers = strings.Split(kafka, ",")
			}
			if o.Dir != "" {
				if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
					return usagef("--state-dir %s is not empty", o.Dir)
				} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return usagef("--state-dir: %v", err)
				}
				if err := os.MkdirAll(o.Dir, 0o700); err != nil {
					return usagef("--state-dir: %v", err)
				}
			}
			o.Out = os.Stdout
			if asJSON {
				o.Out = os.Stderr
			}
			o.Logger = g.logger()
			if !c.Flags().Changed("log-level") {
				// The components' own info lines would drown the progress.
				gg := *g
				gg.logLevel = "warn"
				o.Logger = gg.logger()
			}
			if o.ClickHouse != "" {
				// Fail before the platform starts, with the hint.
				conn, err := analytics.Connect(c.Context(), o.ClickHouse)
				if err != nil {
					return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)? Without one: ccgp demo --no-analytics", err)
				}
				conn.Close()
			}
			sum, err := bench.RunDemo(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(sum)
			}
			fmt.Println()
			fmt.Println("summary (lost and duplicated from the destination chains' records)")
			t := newTable()
			t.row("packets sent", fmt.Sprint(sum.PacketsSent))
			t.row("delivered", fmt.Sprintf("%d (each exactly once: %d lost, %d duplicated)", sum.PacketsDelivered, sum.Lost, sum.Duplicated))
			t.row("receipts", fmt.Sprint(sum.Receipts))
			t.row("rejected", fmt.Sprintf("%d (%d rolled back on the source chain, %d waiting for a person)", sum.Rejected, sum.RolledBack, sum.Manual))
			t.row("confirmed", fmt.Sprintf("%d (receipts proven against anchors and found on the destination chains)", sum.Confirmed))
			t.row("anchors", fmt.Sprintf("%d governance txs, %.1f packets per anchor tx, open anchor committed in %.0f ms on average", sum.Anchors, sum.PacketsPerAnchor, sum.AnchorLatencyMs))
			t.row("pipes", sum.Mode)
			t.row("latency", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (app send to source receipt)", sum.P50Ms, sum.P99Ms))
			t.row("throughput", fmt.Sprintf("%.0f packets/s delivered over %.1fs (target %d/s)", sum.ThroughputPerS, sum.DurationS, sum.RateTarget))
			t.row("mesh", fmt.Sprintf("%d relays, %d pipes, %d orgs", sum.Relays, sum.Pipes, sum.Orgs))
			t.row("governance", fmt.Sprintf("%d set-up txs, %d refusals shown, %d proofs verified, height %d", sum.SetupTxs, sum.RejectedTxs, sum.ProofsVerified, sum.GovHeight))
			if sum.BulkTxs > 0 {
				t.row("governance tx/s", fmt.Sprintf("%.0f (%d txs in bulk)", sum.BulkTxPerSec, sum.BulkTxs))
			}
			t.row("total", fmt.Sprintf("%.1fs", sum.TotalS))
			if err := t.flush(); err != nil {
				return err
			}
			if sum.Analytics != nil {
				if err := printDemoAnalytics(sum.Analytics); err != nil {
					return err
				}
			}
			if sum.Lost > 0 || sum.Duplicated > 0 {
				return fmt.Errorf("%d packets lost and %d duplicated", sum.Lost, sum.Duplicated)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the summary as one JSON object (progress goes to stderr)")
	f.BoolVar(&o.KeepRunning, "keep-running", false, "send until Ctrl-C, then summarise")
	f.IntVar(&o.Rate, "rate", 1000, "packets per second over all pipes")
	f.DurationVar(&o.Duration, "duration", 20*time.Second, "how long the apps send")
	f.IntVar(&o.Payload, "payload", 256, "payload bytes per packet")
	f.IntVar(&o.BulkTxs, "bulk-txs", 0, "also measure a burst of this many governance txs")
	f.StringVar(&o.Mode, "mode", "optimistic", "every pipe's consistency mode: optimistic or strict")
	f.StringVar(&kafka, "kafka", "", "Kafka brokers host:port,... (default: an embedded kfake broker)")
	f.StringVar(&o.ClickHouse, "clickhouse", "", "ClickHouse native address host:port: also fill the analytics ledger and summarise it")
	f.StringVar(&o.Database, "database", "", "with --clickhouse, the database to create and fill (default ccgp_demo_<unix time>)")
	f.BoolVar(&noAnalytics, "no-analytics", false, "skip the analytics ledger (the default without --clickhouse)")
	f.StringVar(&o.Dir, "state-dir", "", "keep the platform's state (simulated chains in DIR/chains/ORG, the governance node, the relays' stores) in this new or empty directory after the run (default: a temporary directory, removed)")
	return cmd
}

// printDemoAnalytics prints the summary's analytics block: what the ledger
// holds, read back from ClickHouse, against the demo's own figures.
func printDemoAnalytics(a *bench.DemoAnalytics) error {
	fmt.Println()
	fmt.Printf("analytics (ClickHouse database %s, read with FINAL)\n", a.Database)
	t := newTable()
	var rows []string
	for _, name := range bench.LedgerTables() {
		rows = append(rows, fmt.Sprintf("%s %d", name, a.Rows[name]))
	}
	t.row("rows", strings.Join(rows, ", "))
	caught := fmt.Sprintf("caught up %.1fs after the drain", a.CatchUpS)
	if !a.CaughtUp {
		caught = fmt.Sprintf("NOT caught up after %.1fs", a.CatchUpS)
	}
	t.row("packets", fmt.Sprintf("%d in the ledger of %d sent, %d with a DELIVERED receipt (%s)", a.PacketsInLedger, a.PacketsSent, a.ReceiptsDelivered, caught))
	t.row("offenders", fmt.Sprintf("%d proven, %d claimed", a.OffendersProven, a.OffendersClaimed))
	t.row("governance", fmt.Sprintf("%d txs, %d refused, followed to height %d", a.GovernanceTxs, a.GovernanceRefused, a.GovHeight))
	t.row("sink", fmt.Sprintf("%d rows, %.0f rows/s, largest lag %d records", a.SinkRows, a.SinkRowsPerS, a.MaxLag))
	printLedgerReports(t, a)
	return t.flush()
}

// printLedgerReports ends the analytics block: the run's reconciliation,
// the anomalies open at the end, and the credit table.
func printLedgerReports(t *table, a *bench.DemoAnalytics) {
	if r := a.Reconciliation; r != nil {
		if r.Clean() {
			var packets uint64
			for _, p := range r.Pipes {
				packets += p.Packets
			}
			t.row("reconciliation", fmt.Sprintf("clean: %d packets over %d pipes agree with the chains' records", packets, len(r.Pipes)))
		} else {
			var kinds []string
			for k, n := range r.ByKind {
				kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
			}
			sort.Strings(kinds)
			t.row("reconciliation", fmt.Sprintf("%d differences: %s (ccgp analytics reconcile lists them)", r.Found, strings.Join(kinds, ", ")))
		}
	}
	if len(a.Anomalies) == 0 {
		t.row("anomalies", "none open")
	}
	for _, x := range a.Anomalies {
		t.row("anomaly", fmt.Sprintf("%s %s: %s", x.Severity, x.Rule, x.Message))
	}
	for _, c := range a.Credit {
		t.row("credit", fmt.Sprintf("%-5s %-12s %4d/1000  delivery %.2f, timely %.2f, %d proven offences", c.Kind, c.Party, c.Score1000,
			c.Delivery, c.Timeliness, c.ProvenOffences))
	}
}
