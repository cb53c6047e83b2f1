package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
)

func newAnalyticsQueryCmd(_ *globals) *cobra.Command {
	var addr, db, output string
	var list bool
	params := analytics.ReportParams()
	values := map[string]*string{}
	c := &cobra.Command{
		Use:   "query [NAME]",
		Short: "Run a named report on the ledger (--list shows them)",
		Long: `Run one of the named reports on the ClickHouse ledger and print its answer.

Every report reads deduplicated rows only (FINAL in each subquery), so a
record the sink wrote twice counts once, and runs on Debian's ClickHouse
18.16 as on current servers. 'ccgp analytics query --list' (or no NAME)
lists the reports with their parameters; docs/analytics.md ("Reports")
gives each one's SQL to paste into clickhouse-client.

Parameters are flags; a report takes only those --list shows for it.
Times (--since inclusive, --until exclusive) are RFC 3339
(2026-12-01T10:00:00Z), a UTC date (2026-12-01) or relative to now (-24h,
-90m, -7d). Without them a report covers all time. Values are bound by the
driver, never pasted into the SQL.

Output: -o table (aligned, the default), json (an array of objects, keys in
column order) or csv (with a header line). Times print in RFC 3339 UTC.

Exit status: 2 for an unknown report or a bad parameter (with the list), 1
when ClickHouse cannot be reached (named in the error) or the query fails.`,
		Example: `  ccgp analytics query --list
  ccgp analytics query pipe-daily --pipe pipe-1 --since -7d --clickhouse 127.0.0.1:9000
  ccgp analytics query latency-hourly --since 2026-12-01 --until 2026-12-02 -o csv > latency.csv
  ccgp analytics query packet-history --packet pipe-1/42
  ccgp analytics query top-offenders --since -30d --limit 5 -o json
  ccgp analytics query open-manual --database ccgp_prod --clickhouse ch.internal:9000`,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("query takes one report name, got %d: %v\n\n%s", len(args), args, reportList())
			}
			if list || len(args) == 0 {
				_, err := io.WriteString(os.Stdout, reportList())
				return err
			}
			r, err := analytics.LookupReport(args[0])
			if err != nil {
				return usagef("%v\n\n%s", err, reportList())
			}
			write, err := resultWriter(output)
			if err != nil {
				return err
			}
			given := map[string]string{}
			for name := range params {
				if c.Flags().Changed(name) {
					given[name] = *values[name]
				}
			}
			// Parameters are checked before connecting: bad usage is exit 2
			// whether or not the server answers.
			now := time.Now()
			if _, err := r.Bind(given, now); err != nil {
				return usagef("%v\n\n%s", err, reportList())
			}
			ctx := c.Context()
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)?", err)
			}
			defer conn.Close()
			res, err := analytics.RunReport(ctx, conn, db, r, given, now)
			if errors.Is(err, analytics.ErrBadDatabase) {
				return usagef("--database: %v", err)
			}
			if err != nil {
				return err
			}
			return write(res, os.Stdout)
		},
	}
	c.Flags().StringVar(&addr, "clickhouse", "127.0.0.1:9000", "ClickHouse native address host:port")
	c.Flags().StringVar(&db, "database", "ccgp", "the ledger's database")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or csv")
	c.Flags().BoolVar(&list, "list", false, "list the reports and their parameters")
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := params[name]
		values[name] = new(string)
		help := p.Help
		if p.Default != "" {
			help += " (default " + p.Default + ")"
		}
		c.Flags().StringVar(values[name], name, "", help)
	}
	return c
}

// reportList is what --list prints: every report, its parameters and
// what it answers.
func reportList() string {
	params := analytics.ReportParams()
	var b strings.Builder
	b.WriteString("Reports (ccgp analytics query NAME [flags]; see --help):\n")
	for _, r := range analytics.Reports() {
		var flags []string
		for _, name := range r.Params {
			f := "--" + name
			if params[name].Required {
				f += " (required)"
			}
			flags = append(flags, f)
		}
		fmt.Fprintf(&b, "\n  %s  %s\n      %s\n", r.Name, strings.Join(flags, " "), r.Description)
	}
	return b.String()
}

func resultWriter(format string) (func(*analytics.Result, io.Writer) error, error) {
	switch format {
	case "table":
		return (*analytics.Result).WriteTable, nil
	case "json":
		return (*analytics.Result).WriteJSON, nil
	case "csv":
		return (*analytics.Result).WriteCSV, nil
	}
	return nil, usagef("-o %q: want table, json or csv", format)
}
