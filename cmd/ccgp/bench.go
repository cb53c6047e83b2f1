package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the platform",
	}
	var o bench.GovOptions
	var asJSON bool
	gov := &cobra.Command{
		Use:   "gov",
		Short: "Governance chain tx/s with txs arriving in bulk",
		Long: `Start a loopback network of --validators validators in this process, hand
--txs pre-signed governance txs (membership applications from fresh keys)
to the mempools at once, round-robin over the validators, and report tx/s
from the first broadcast to the commit of the last tx.`,
		Example: "  ccgp bench gov --validators 1 --txs 20000\n  ccgp bench gov --validators 4 --txs 20000 --json",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if o.Validators < 1 || o.Validators > 16 {
				return usagef("--validators must be 1-16")
			}
			if o.Txs < 1 || o.Txs > 50000 {
				return usagef("--txs must be 1-50000 (the mempool holds 50000)")
			}
			o.Progress = func(done, total int, h int64) {
				fmt.Fprintf(os.Stderr, "\r%d/%d committed, height %d   ", done, total, h)
			}
			r, err := bench.GovThroughput(c.Context(), o)
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(r)
			}
			t := newTable("VALIDATORS", "TXS", "COMMITTED", "REJECTED", "BLOCKS", "SECONDS", "TX/S")
			t.row(fmt.Sprint(r.Validators), fmt.Sprint(r.Txs), fmt.Sprint(r.Committed), fmt.Sprint(r.Rejected),
				fmt.Sprint(r.Blocks), fmt.Sprintf("%.2f", r.Seconds), fmt.Sprintf("%.0f", r.TxPerSecond))
			return t.flush()
		},
	}
	gov.Flags().IntVar(&o.Validators, "validators", 1, "validators in the network")
	gov.Flags().IntVar(&o.Txs, "txs", 20000, "txs in the burst")
	gov.Flags().DurationVar(&o.BlockInterval, "block-interval", 100*time.Millisecond, "CometBFT timeout_commit")
	gov.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.AddCommand(gov)
	return cmd
}
