package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
)

func newAnalyticsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "analytics",
		Short: "The ledger in ClickHouse: migrations, the sink, reports and anomaly warnings",
		Long: `The analytics ledger lives in ClickHouse (Debian's 18.16 or any later
server), reached over its native TCP port. docs/analytics.md describes every
table and column.

A throwaway local server for trying it:
  apt-get install -y clickhouse-server clickhouse-client
  .ci/clickhouse start /tmp/ch        # prints 127.0.0.1:PORT
  ccgp analytics migrate --clickhouse 127.0.0.1:PORT
  ccgp analytics sink --kafka 127.0.0.1:9092 --clickhouse 127.0.0.1:PORT --node 127.0.0.1:26657
  ccgp analytics query --list
  ccgp analytics query pipe-daily --clickhouse 127.0.0.1:PORT --pipe pipe-1-2
  ccgp analytics anomalies --clickhouse 127.0.0.1:PORT
  .ci/clickhouse stop /tmp/ch`,
	}
	cmd.AddCommand(newAnalyticsMigrateCmd(g), newAnalyticsSinkCmd(g))
	cmd.AddCommand(newAnalyticsQueryCmd(g))
	cmd.AddCommand(newAnalyticsAnomaliesCmd(g))
	return cmd
}

func newAnalyticsMigrateCmd(_ *globals) *cobra.Command {
	var addr, db string
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the analytics schema in ClickHouse",
		Long: `Bring the database to the newest schema version this binary knows.

The schema is a sequence of numbered migrations embedded in the binary
(analytics/migrations/NNNN_name.sql). Each one applied is recorded in the
database's schema_migrations table, so running migrate again does nothing,
and a newer binary applies only what is missing. The database is created
when it does not exist.

A database recorded at a version newer than this binary knows is refused
(exit 1) and left untouched: upgrade ccgp instead. 'ccgp analytics sink'
applies the same migrations at start.

An unreachable server is exit 1; give --clickhouse the server's native TCP
port (9000 by default, not the HTTP port 8123).`,
		Example: `  ccgp analytics migrate --clickhouse 127.0.0.1:9000
  ccgp analytics migrate --clickhouse 10.0.0.5:9000 --database ccgp_staging`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)? See 'ccgp analytics --help'", err)
			}
			defer conn.Close()
			rep, err := analytics.Migrate(ctx, conn, db)
			if errors.Is(err, analytics.ErrBadDatabase) {
				return usagef("--database: %v", err)
			}
			for _, m := range rep.Applied {
				fmt.Fprintf(os.Stdout, "applied %04d_%s\n", m.Version, m.Name)
			}
			if err != nil {
				return err
			}
			if len(rep.Applied) == 0 {
				fmt.Fprintf(os.Stdout, "database %s at %s: schema version %d, up to date\n", db, addr, rep.To)
			} else {
				fmt.Fprintf(os.Stdout, "database %s at %s: schema version %d (was %d)\n", db, addr, rep.To, rep.From)
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "clickhouse", "127.0.0.1:9000", "ClickHouse native address host:port")
	c.Flags().StringVar(&db, "database", "ccgp", "database to migrate (created when missing)")
	return c
}
