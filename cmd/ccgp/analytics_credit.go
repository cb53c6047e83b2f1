package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/govchain"
)

func newAnalyticsCreditCmd(g *globals) *cobra.Command {
	f := &govFlags{globals: g}
	var addr, db, party string
	var window, objective time.Duration
	var report bool
	c := &cobra.Command{
		Use:   "credit",
		Short: "Credit scores of orgs and relays from the ledger, and their reports on chain",
		Long: `Score every org and relay over the last --window from the ledger in
ClickHouse, write the scores to credit_scores, and show them with the
reasons behind each. Scores run 0-1000 (the chain's scale): delivery
success, timeliness against the pipe's objective (relaxed to twice the
network's median latency, so a stall that slows everyone lowers no one),
compensations caused and availability, times 1/2 for every proven offence
(claimed offences are counted, never weighted). A fault goes to its cause:
what a destination chain refused or timed out is held against no relay;
packets to a relay that was down are its fault, not the source's.
docs/analytics.md ("Credit scores") gives the rules and the evidence digest.

With --report, each score shown is also sent to the governance chain as a
report-credit tx signed by --from, an auditor account. The chain counts the
median of the auditor orgs' latest reports: below credit_restrict the
party's pipes are rate-limited, below credit_expel an expulsion proposal
opens for the genesis orgs to vote on ('ccgp gov params' shows the
thresholds).

--clickhouse is the server's native TCP port. Bad flags are exit 2; an
unreachable server or node, or a refused report, exit 1.`,
		Example: `  ccgp analytics credit --clickhouse 127.0.0.1:9000
  ccgp analytics credit --party relay-org-2 --window 1h -o json --clickhouse 127.0.0.1:9000
  ccgp analytics credit --report --from auditor-1 --node 127.0.0.1:26657 --genesis net/genesis.json --clickhouse 127.0.0.1:9000`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if f.output != "table" && f.output != "json" {
				return usagef("unknown output format %q: use table or json", f.output)
			}
			if window <= 0 || window > 31*24*time.Hour {
				return usagef("--window %s: give a duration up to 744h (31 days), e.g. 24h", window)
			}
			if report && f.from == "" {
				return usagef("--report needs --from AUDITOR_KEY: the auditor account that signs the reports")
			}
			ctx := c.Context()
			conn, err := analytics.Connect(ctx, addr)
			if err != nil {
				return fmt.Errorf("%w\nIs a ClickHouse server listening there (its native TCP port, not HTTP 8123)? See 'ccgp analytics --help'", err)
			}
			defer conn.Close()
			end := time.Now().UTC().Truncate(time.Second)
			scores, err := analytics.Credit(ctx, conn, db, analytics.CreditWindow{Start: end.Add(-window), End: end, Objective: objective})
			if errors.Is(err, analytics.ErrBadDatabase) {
				return usagef("--database: %v", err)
			}
			if err != nil {
				return err
			}
			scores = pickParty(scores, party)
			if err := printCredit(f.output, scores, party); err != nil {
				return err
			}
			if !report {
				return nil
			}
			return reportCredit(c, f, scores)
		},
	}
	f.addFlags(c)
	c.Flags().StringVar(&addr, "clickhouse", "127.0.0.1:9000", "ClickHouse native address host:port")
	c.Flags().StringVar(&db, "database", "ccgp", "the ledger's database")
	c.Flags().StringVar(&party, "party", "", "show (and report) only this party: an org or relay id, or org:ID / relay:ID")
	c.Flags().DurationVar(&window, "window", 24*time.Hour, "score the window that ends now and lasts this long")
	c.Flags().DurationVar(&objective, "objective", 2*time.Second, "the latency a delivered packet should meet (source event to receipt)")
	c.Flags().BoolVar(&report, "report", false, "send each score shown to the governance chain (report-credit, signed by --from)")
	return c
}

// pickParty keeps the scores of party ("" keeps all): an id matches an
// org or a relay of that id, "kind:id" only that one.
func pickParty(scores []analytics.CreditScore, party string) []analytics.CreditScore {
	if party == "" {
		return scores
	}
	var out []analytics.CreditScore
	for _, s := range scores {
		if s.Party == party || s.Kind+":"+s.Party == party {
			out = append(out, s)
		}
	}
	return out
}

func printCredit(output string, scores []analytics.CreditScore, party string) error {
	if output == "json" {
		if scores == nil {
			scores = []analytics.CreditScore{}
		}
		return writeJSON(scores)
	}
	if len(scores) == 0 {
		if party != "" {
			fmt.Fprintf(os.Stderr, "no packets or offences of %s in the window\n", party)
		} else {
			fmt.Fprintln(os.Stderr, "no packets or offences in the window: nothing to score")
		}
		return nil
	}
	t := newTable("KIND", "PARTY", "SCORE", "DELIVERY", "TIMELY", "OFFENCES", "COMPENSATIONS", "AVAILABILITY", "PACKETS", "PROVEN")
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }
	for _, s := range scores {
		t.row(s.Kind, s.Party, fmt.Sprint(s.Score1000), pct(s.Delivery), pct(s.Timeliness), pct(s.Offences), pct(s.Compensations),
			pct(s.Availability), fmt.Sprint(s.Packets), fmt.Sprint(s.ProvenOffences))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, s := range scores {
		fmt.Printf("\n%s %s: %d (evidence %s)\n", s.Kind, s.Party, s.Score1000, s.Digest)
		for _, r := range s.Reasons {
			fmt.Printf("  - %s\n", r)
		}
	}
	return nil
}

// reportCredit sends each score as a report-credit tx; it goes on past a
// refusal and fails (exit 1) at the end if any was refused.
func reportCredit(c *cobra.Command, f *govFlags, scores []analytics.CreditScore) error {
	ctx := c.Context()
	s, err := f.signer(f.from)
	if err != nil {
		return err
	}
	cl, err := f.client(ctx)
	if err != nil {
		return err
	}
	var refused []string
	for _, sc := range scores {
		res, err := cl.Submit(ctx, s, sc.Report())
		if err != nil {
			var te *govchain.TxError
			if !errors.As(err, &te) {
				return fmt.Errorf("report %s %s: %w", sc.Kind, sc.Party, err)
			}
			fmt.Fprintf(os.Stderr, "report %s %s refused: %s\n", sc.Kind, sc.Party, te.Msg)
			refused = append(refused, sc.Kind+":"+sc.Party)
			continue
		}
		fmt.Fprintf(os.Stderr, "reported %s %s: %d at height %d", sc.Kind, sc.Party, sc.Score1000, res.Height)
		for _, e := range res.Events {
			switch {
			case e.Type == "credit" && e.Attrs["counted"] == "true":
				fmt.Fprintf(os.Stderr, "; counted %s over %s auditor orgs, restricted %s", e.Attrs["score"], e.Attrs["auditor_orgs"], e.Attrs["restricted"])
			case e.Type == "proposal":
				fmt.Fprintf(os.Stderr, "; proposal %s opened: %s %s", e.Attrs["id"], e.Attrs["kind"], e.Attrs["subject"])
			}
		}
		fmt.Fprintln(os.Stderr)
	}
	if len(refused) > 0 {
		return fmt.Errorf("%d of %d reports refused: %s", len(refused), len(scores), strings.Join(refused, ", "))
	}
	return nil
}
