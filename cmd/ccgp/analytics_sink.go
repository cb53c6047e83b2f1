package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/govchain"
)

func newAnalyticsSinkCmd(g *globals) *cobra.Command {
	var kafka, addr, node, db, group, rulesFile string
	var every time.Duration
	var noAnomalies bool
	var trust trustFlags
	c := &cobra.Command{
		Use:   "sink",
		Short: "Copy the mesh's Kafka topics into the ClickHouse ledger",
		Long: `Read, in its own consumer group, the topics the relays already write, and
insert them into ClickHouse:

  ccgp.events, ccgp.events.<relay>   packets -> packets (org, relay and subchain
                                     columns from the pipe's governance record)
  ccgp.receipts                      receipt batches -> receipts, batches
  ccgp.offenders                     offence records -> offenders

and follow the governance chain's blocks (--node) into governance (every
tx, refused ones with their code), anchors and exceptions: the chain is
the record of those, not Kafka. It resumes at the highest height written.

Every --anomalies-every it evaluates the anomaly rules (--rules, default
the built-in copy of deploy/analytics/rules.yaml) over the ledger: each
anomaly is a row in the anomalies table while it lasts and a record in the
Kafka topic ccgp.anomalies when it starts and when it is resolved ('ccgp
analytics anomalies' lists them).

It is only a consumer: it never slows the relays. Rows go in batches (up to
50 000, or whatever arrived within a second); the group's offsets are
committed only after ClickHouse acknowledged every row, and the tables
absorb the redelivery that follows a crash (docs/analytics.md, "The sink").
Undecodable records are counted and skipped.

While ClickHouse is down the sink retries with backoff and stops reading:
nothing is lost, the lag grows, and a line every 10 s reports rows/s and
lag. At start it applies the schema migrations (like 'ccgp analytics
migrate') and refuses a database whose schema is newer than itself.
SIGINT/SIGTERM: it flushes what it holds (if ClickHouse answers), commits
and leaves the group.

--clickhouse is the server's native TCP port (9000 by default, not HTTP
8123). --node is a governance node's RPC; give --genesis (or --chain-id,
--trust-height, --trust-hash) so that its answers are verified.

Exit status: 2 for bad usage, 1 when ClickHouse, Kafka or the governance
node cannot be used, or the schema is newer than this binary.`,
		Example: `  # everything local: the dev broker, a throwaway server, a testnet node
  ccgp kafka dev &
  .ci/clickhouse start /tmp/ch                       # prints 127.0.0.1:PORT
  ccgp analytics sink --kafka 127.0.0.1:9092 --clickhouse 127.0.0.1:PORT \
      --node 127.0.0.1:26657 --genesis ./net/validator0/config/genesis.json

  # production: a real cluster, another database and group
  ccgp analytics sink --kafka k1:9092,k2:9092 --clickhouse ch.internal:9000 \
      --node gov1:26657 --genesis genesis.json --database ccgp_prod --group ccgp-analytics-prod`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			var missing []string
			for _, f := range []struct{ name, v string }{{"--kafka", kafka}, {"--clickhouse", addr}, {"--node", node}} {
				if f.v == "" {
					missing = append(missing, f.name)
				}
			}
			if len(missing) > 0 {
				return usagef("missing %s (see 'ccgp analytics sink --help')", strings.Join(missing, ", "))
			}
			opts, err := trust.options()
			if err != nil {
				return err
			}
			log := g.logger()
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)?", err)
			}
			defer conn.Close()
			gov, err := govchain.Dial(ctx, node, append(opts, govchain.WithLogger(log))...)
			if err != nil {
				return err
			}
			s, err := analytics.NewSink(analytics.SinkConfig{Brokers: strings.Split(kafka, ","), Conn: conn, Database: db,
				Group: group, Pipes: gov, Log: log})
			if errors.Is(err, analytics.ErrBadDatabase) {
				return usagef("--database: %v", err)
			}
			if err != nil {
				return err
			}
			// The follower writes into the migrated tables: migrate
			// first (the sink does it again at its start, a no-op).
			if _, err := analytics.Migrate(ctx, conn, db); err != nil {
				if errors.Is(err, analytics.ErrSchemaNewer) {
					return fmt.Errorf("%w\nThe database was migrated by a newer ccgp: run the sink from that version", err)
				}
				return err
			}
			f, err := analytics.NewGovFollower(analytics.GovFollowerConfig{Chain: gov, Conn: conn, DB: db, Log: log})
			if err != nil {
				return err
			}
			var watcher *analytics.Watcher
			if !noAnomalies {
				if watcher, err = newWatcher(ctx, conn, db, rulesFile, strings.Split(kafka, ","), s); err != nil {
					return err
				}
			}
			log.Info("analytics sink starting", "kafka", kafka, "clickhouse", addr, "database", db, "group", group, "node", node)
			// Either one failing stops both: a sink without its follower
			// would leave the governance tables silently behind.
			grp, gctx := errgroup.WithContext(ctx)
			grp.Go(func() error { return s.Run(gctx) })
			grp.Go(func() error {
				if err := f.Run(gctx); err != nil {
					return fmt.Errorf("governance follower: %w", err)
				}
				return nil
			})
			if watcher != nil {
				grp.Go(func() error { return watcher.Run(gctx, every) })
			}
			if err := grp.Wait(); err != nil {
				if errors.Is(err, analytics.ErrSchemaNewer) {
					return fmt.Errorf("%w\nThe database was migrated by a newer ccgp: run the sink from that version", err)
				}
				return err
			}
			st, ft := s.Stats(), f.Stats()
			log.Info("analytics sink stopped", "records", st.Records, "skipped", st.Skipped, "packets", st.Packets,
				"receipts", st.Receipts, "offenders", st.Offenders, "governance_height", ft.Written)
			return nil
		},
	}
	c.Flags().StringVar(&kafka, "kafka", "", "Kafka brokers host:port,... (required)")
	c.Flags().StringVar(&addr, "clickhouse", "", "ClickHouse native address host:port (required)")
	c.Flags().StringVar(&node, "node", "", "RPC address of a governance node, for the pipes' endpoints (required)")
	c.Flags().StringVar(&db, "database", "ccgp", "database to write (created and migrated when needed)")
	c.Flags().StringVar(&group, "group", "ccgp-analytics", "the sink's Kafka consumer group")
	c.Flags().StringVar(&rulesFile, "rules", "", "anomaly rules (YAML, as deploy/analytics/rules.yaml; default: the rules built in)")
	c.Flags().DurationVar(&every, "anomalies-every", 10*time.Second, "how often the anomaly rules are evaluated")
	c.Flags().BoolVar(&noAnomalies, "no-anomalies", false, "do not evaluate anomaly rules")
	trust.add(c.Flags(), "")
	return c
}

// newWatcher reads the anomaly rules and makes the watcher the sink runs:
// records to ccgp.anomalies through its own producer, the sink's lag for
// the consumer_lag rules.
func newWatcher(ctx context.Context, conn driver.Conn, db, rulesFile string, brokers []string, s *analytics.Sink) (*analytics.Watcher, error) {
	rules := analytics.DefaultRules()
	if rulesFile != "" {
		b, err := os.ReadFile(rulesFile)
		if err != nil {
			return nil, usagef("--rules: %v", err)
		}
		if rules, err = analytics.ParseRules(b); err != nil {
			return nil, usagef("--rules %s: %v", rulesFile, err)
		}
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(analytics.AnomalyTopic), kgo.AllowAutoTopicCreation())
	if err != nil {
		return nil, fmt.Errorf("anomaly records: kafka: %w", err)
	}
	context.AfterFunc(ctx, prod.Close)
	return analytics.NewWatcher(ctx, analytics.WatcherConfig{Conn: conn, DB: db, Rules: rules,
		Publish: func(ctx context.Context, as []analytics.Anomaly) error {
			recs := make([]*kgo.Record, 0, len(as))
			for _, a := range as {
				v, err := analytics.EncodeAnomaly(a)
				if err != nil {
					return err
				}
				recs = append(recs, &kgo.Record{Key: []byte(a.Rule + "/" + a.Key), Value: v})
			}
			return prod.ProduceSync(ctx, recs...).FirstErr()
		},
		Lag: func() (int64, bool) {
			st := s.Stats()
			return st.Lag, !st.LagAt.IsZero()
		}})
}
