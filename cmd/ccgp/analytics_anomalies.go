package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
)

func newAnalyticsAnomaliesCmd(_ *globals) *cobra.Command {
	var addr, db, output, since string
	var all bool
	c := &cobra.Command{
		Use:   "anomalies",
		Short: "List the anomaly warnings the sink's rules raised",
		Long: `List the anomalies in the ledger: the rules of deploy/analytics/rules.yaml
that fired, what they fired for (a pipe, an org and relay, a relay pair, a
relay, the sink), since when, and their message. 'ccgp analytics sink'
evaluates the rules every --anomalies-every and writes each anomaly once
while it lasts (its last look and value move on), and marks it resolved
when it stops; it also sends one record to the Kafka topic ccgp.anomalies
when an anomaly starts and one when it is resolved.

By default only the anomalies still open are listed; --all adds the
resolved ones. --since keeps those last seen within a duration (24h) or
since an RFC 3339 time.

Exit status: 0 (even when anomalies are open: alerting reads the output
or the topic), 2 for bad usage, 1 when ClickHouse cannot be read.`,
		Example: `  ccgp analytics anomalies --clickhouse 127.0.0.1:9000
  ccgp analytics anomalies --clickhouse 127.0.0.1:9000 --all --since 2h -o json`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if addr == "" {
				return usagef("missing --clickhouse (see 'ccgp analytics anomalies --help')")
			}
			if output != "table" && output != "json" {
				return usagef("unknown output format %q: table or json", output)
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return usagef("--since: %v", err)
			}
			ctx := c.Context()
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)?", err)
			}
			defer conn.Close()
			as, err := analytics.ListAnomalies(ctx, conn, db, from, all)
			if err != nil {
				return err
			}
			if output == "json" {
				if as == nil {
					as = []analytics.Anomaly{}
				}
				return writeJSON(as)
			}
			if len(as) == 0 {
				fmt.Fprintln(os.Stderr, "no anomalies")
				return nil
			}
			t := newTable("RULE", "KEY", "SEVERITY", "SINCE", "LAST SEEN", "STATE", "MESSAGE")
			for _, a := range as {
				state := "open"
				if a.Resolved {
					state = "resolved"
				}
				t.row(a.Rule, a.Key, a.Severity, a.FirstSeen.Format(time.RFC3339), a.LastSeen.Format(time.RFC3339), state, a.Message)
			}
			return t.flush()
		},
	}
	c.Flags().StringVar(&addr, "clickhouse", "", "ClickHouse native address host:port (required)")
	c.Flags().StringVar(&db, "database", "ccgp", "the ledger database")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	c.Flags().StringVar(&since, "since", "", "only anomalies last seen within this duration (24h) or since this RFC 3339 time")
	c.Flags().BoolVar(&all, "all", false, "include resolved anomalies")
	return c
}

// parseSince reads a --since value: a duration back from now ("24h", or
// "-24h"), an RFC 3339 time, or "" for the beginning of time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(s, "-")); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h) nor an RFC 3339 time (2026-12-01T00:00:00Z)", s)
	}
	return t, nil
}
