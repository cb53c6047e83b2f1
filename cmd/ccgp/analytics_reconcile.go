package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
)

func newAnalyticsReconcileCmd(_ *globals) *cobra.Command {
	var addr, db, from, to, pipe, out string
	var chains []string
	c := &cobra.Command{
		Use:   "reconcile",
		Short: "Compare the ledger with the source and destination chains; exit 1 on any difference",
		Long: `Compare, for every packet of a period, what the three parties say: the
source chain (requested? rolled back?), the ledger in ClickHouse (seen from
the events topic? receipt and destination tx? exception? anchored,
confirmed?) and the destination chain (executed? how many times? refused?).

The period is the ledger's packets with --from <= event time < --to; each
pipe's sequences from the first to the last of those are compared. Every
chain a pipe of the period names (its source and its destination) must be
given with --chain ID=DIR, the directory of that simulated chain's store.
The relay (or demo) that owns a store must be stopped first: a store in use
is locked, and reconcile says so (exit 1).

Differences found (stable names, for scripts and alerts):
  delivery_missing        the ledger holds a delivery (receipt DELIVERED with a
                          destination tx) that the destination chain lacks
  rollback_unrecorded     the source chain rolled back a request the ledger has
                          no ROLLED_BACK exception for
  executed_twice          the destination chain executed a packet more than once
  confirmed_not_on_chain  the ledger says confirmed (batch confirmation anchor or
                          CONFIRMED exception) and the destination lacks it
A packet whose exception is MANUAL or RESOLVED is in a person's hands and
never reported.

Times: RFC 3339 (2026-12-03T10:00:00Z), "now", or relative to now: -1h,
-90m, -2h30m, -7d (Go durations, plus d for days).

Output (-o): table (per-pipe counts, then the differences), json (the whole
report), csv (one row per difference, with a header). At most 10000
differences are listed; the counts are always complete.

Exit status: 0 clean, 1 differences found (or a failure: unreachable
ClickHouse, a locked store), 2 bad input (a bad time, --from not before
--to, an unknown -o, a missing flag or chain).`,
		Example: `  # the last hour, every pipe
  ccgp analytics reconcile --clickhouse 127.0.0.1:9000 --from -1h \
      --chain sim-a=/var/lib/ccgp/chains/sim-a --chain sim-b=/var/lib/ccgp/chains/sim-b

  # one pipe, one day, as JSON
  ccgp analytics reconcile --clickhouse 127.0.0.1:9000 --pipe orders \
      --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z -o json \
      --chain sim-a=./a --chain sim-b=./b

  # cron, every night at 02:10, the day before; mail on exit 1
  10 2 * * * ccgp analytics reconcile --from -24h --chain sim-a=/srv/a --chain sim-b=/srv/b -o csv > /var/log/ccgp/reconcile.csv || mail -s "ccgp: reconcile found differences" ops@example.org < /var/log/ccgp/reconcile.csv`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			now := time.Now()
			if from == "" {
				return usagef("--from is required (e.g. --from -1h); see '%s --help'", c.CommandPath())
			}
			f, err := parseWhen(from, now)
			if err != nil {
				return usagef("--from: %v", err)
			}
			t, err := parseWhen(to, now)
			if err != nil {
				return usagef("--to: %v", err)
			}
			if !f.Before(t) {
				return usagef("--from %s is not before --to %s", f.Format(time.RFC3339), t.Format(time.RFC3339))
			}
			switch out {
			case "table", "json", "csv":
			default:
				return usagef("-o %q: want table, json or csv", out)
			}
			if len(chains) == 0 {
				return usagef("--chain ID=DIR is required, once per chain of the period; see '%s --help'", c.CommandPath())
			}
			dirs := map[string]string{}
			for _, kv := range chains {
				id, dir, ok := strings.Cut(kv, "=")
				if !ok || id == "" || dir == "" {
					return usagef("--chain %q: want ID=DIR", kv)
				}
				if _, dup := dirs[id]; dup {
					return usagef("--chain %s given twice", id)
				}
				// simchain.Open creates a missing store: a typo must not
				// become an empty chain that lacks every delivery.
				if _, err := os.Stat(dir + "/CURRENT"); err != nil {
					return usagef("--chain %s=%s: not a chain store (no %s/CURRENT)", id, dir, dir)
				}
				dirs[id] = dir
			}

			ctx := c.Context()
			records := map[string]subchain.Records{}
			for id, dir := range dirs {
				// An hour between blocks: the chain is only read, and
				// produces no block while it is open.
				ch, err := simchain.Open(dir, simchain.Options{ID: id, BlockInterval: time.Hour})
				if errors.Is(err, simchain.ErrLocked) {
					return fmt.Errorf("--chain %s=%s: the store is in use; stop the relay or demo that owns it, then run reconcile again: %w", id, dir, err)
				}
				if err != nil {
					return fmt.Errorf("--chain %s=%s: %w", id, dir, err)
				}
				defer ch.Close()
				records[id] = ch
			}
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)? See 'ccgp analytics --help'", err)
			}
			defer conn.Close()
			rep, err := analytics.Reconcile(ctx, analytics.ReconcileInput{
				Conn: conn, Database: db, From: f, To: t, Pipe: pipe, Chains: records,
			})
			switch {
			case errors.Is(err, analytics.ErrBadDatabase):
				return usagef("--database: %v", err)
			case errors.Is(err, analytics.ErrChainMissing):
				return usagef("%v: give each with --chain ID=DIR", err)
			case err != nil:
				return err
			}
			if err := writeReconcile(out, &rep); err != nil {
				return err
			}
			if !rep.Clean() {
				return fmt.Errorf("reconcile: %d difference(s) in %s .. %s: %s", rep.Found, f.Format(time.RFC3339), t.Format(time.RFC3339), kindsLine(&rep))
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "clickhouse", "127.0.0.1:9000", "ClickHouse native address host:port")
	c.Flags().StringVar(&db, "database", "ccgp", "ledger database")
	c.Flags().StringVar(&from, "from", "", "start of the period, inclusive: RFC 3339, now, or relative (-1h, -7d); required")
	c.Flags().StringVar(&to, "to", "now", "end of the period, exclusive: RFC 3339, now, or relative")
	c.Flags().StringVar(&pipe, "pipe", "", "compare this pipe only")
	c.Flags().StringVarP(&out, "output", "o", "table", "output: table, json or csv")
	c.Flags().StringArrayVar(&chains, "chain", nil, "ID=DIR of a simulated chain's store (repeat per chain; its relay stopped)")
	return c
}

// parseWhen reads a time flag: RFC 3339, "now", or a signed offset from
// now (a Go duration, or a whole number of days with d).
func parseWhen(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+"):
		if days, ok := strings.CutSuffix(s[1:], "d"); ok {
			n, err := strconv.ParseUint(days, 10, 16)
			if err != nil {
				return time.Time{}, fmt.Errorf("%q: want a whole number of days, like -7d", s)
			}
			d := time.Duration(n) * 24 * time.Hour
			if s[0] == '-' {
				d = -d
			}
			return now.Add(d), nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-12-03T10:00:00Z), now, or an offset like -1h, -90m, -7d", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-12-03T10:00:00Z), now, or an offset like -1h, -90m, -7d", s)
	}
	return t, nil
}

func kindsLine(r *analytics.Reconciliation) string {
	var parts []string
	for _, k := range []analytics.Kind{analytics.DeliveryMissing, analytics.RollbackUnrecorded, analytics.ExecutedTwice, analytics.ConfirmedNotOnChain} {
		if n := r.ByKind[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	return strings.Join(parts, ", ")
}

func writeReconcile(format string, r *analytics.Reconciliation) error {
	switch format {
	case "json":
		return writeJSON(r)
	case "csv":
		w := csv.NewWriter(os.Stdout)
		w.Write([]string{"kind", "pipe", "seq", "packet_id",
			"source_requested", "source_rolled_back", "source_reason",
			"ledger_seen", "ledger_receipt", "ledger_dest_tx", "ledger_exception", "ledger_anchored", "ledger_confirmed",
			"dest_status", "dest_tx", "dest_height", "dest_count"})
		for _, d := range r.Differences {
			b := strconv.FormatBool
			u := func(v uint64) string { return strconv.FormatUint(v, 10) }
			w.Write([]string{string(d.Kind), d.Pipe, u(d.Seq), d.PacketID,
				b(d.Source.Requested), b(d.Source.RolledBack), d.Source.Reason,
				b(d.Ledger.Seen), d.Ledger.Receipt, d.Ledger.DestTx, d.Ledger.Exception, b(d.Ledger.Anchored), b(d.Ledger.Confirmed),
				d.Dest.Status, d.Dest.Tx, u(d.Dest.Height), u(d.Dest.Count)})
		}
		w.Flush()
		return w.Error()
	}
	t := newTable("PIPE", "SOURCE", "DEST", "SEQS", "PACKETS", "REQUESTS", "DELIVERIES", "RECEIPTS", "ANCHORED", "CONFIRMED", "ROLLED_BACK", "DIFFERENCES")
	for _, p := range r.Pipes {
		t.row(p.Pipe, p.SourceChain, p.DestChain, fmt.Sprintf("%d-%d", p.FirstSeq, p.LastSeq),
			fmt.Sprint(p.Packets), fmt.Sprint(p.Requests), fmt.Sprint(p.Deliveries), fmt.Sprint(p.Receipts),
			fmt.Sprint(p.Anchored), fmt.Sprint(p.Confirmed), fmt.Sprint(p.RolledBack), fmt.Sprint(p.Differences))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Differences) > 0 {
		fmt.Println()
		t = newTable("KIND", "PIPE", "SEQ", "PACKET", "SOURCE", "LEDGER", "DEST")
		for _, d := range r.Differences {
			t.row(string(d.Kind), d.Pipe, fmt.Sprint(d.Seq), d.PacketID[:min(16, len(d.PacketID))], sourceCell(d.Source), ledgerCell(d.Ledger), destCell(d.Dest))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	switch {
	case r.Truncated:
		fmt.Printf("\n%d differences, the first %d listed\n", r.Found, len(r.Differences))
	case r.Clean():
		fmt.Printf("\nclean: %d pipe(s), no differences\n", len(r.Pipes))
	default:
		fmt.Printf("\n%d difference(s)\n", r.Found)
	}
	return nil
}

func sourceCell(s analytics.SourceSays) string {
	switch {
	case s.RolledBack:
		return "rolled back: " + s.Reason
	case s.Requested:
		return "requested"
	}
	return "no request"
}

func ledgerCell(l analytics.LedgerSays) string {
	var parts []string
	if !l.Seen {
		parts = append(parts, "no packet row")
	}
	if l.Receipt != "" {
		r := "receipt " + l.Receipt
		if l.DestTx != "" {
			r += " tx " + l.DestTx[:min(12, len(l.DestTx))]
		}
		parts = append(parts, r)
	}
	if l.Exception != "" {
		parts = append(parts, "exception "+l.Exception)
	}
	if l.Confirmed {
		parts = append(parts, "batch confirmed")
	} else if l.Anchored {
		parts = append(parts, "batch anchored")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func destCell(d analytics.DestSays) string {
	if d.Status == "" {
		return "no record"
	}
	return fmt.Sprintf("%s ×%d at %d", d.Status, d.Count, d.Height)
}
