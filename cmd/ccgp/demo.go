package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/bench"
)

func newDemoCmd(g *globals) *cobra.Command {
	var o bench.DemoOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the platform in one process and print what it did",
		Long: `Run the platform in one process on 127.0.0.1 with development keys:
a governance chain node (CometBFT + govchain) with three genesis orgs, a
fourth org admitted by vote, cross-chain accounts voted in, relay services,
subchains, apps, contracts and pipes applied for and authorized, a pipe
suspended and resumed, txs rejected with their reasons, proven reads, and a
burst of governance txs to measure throughput. It ends by itself with a
summary; --keep-running leaves the chain up for 'ccgp gov'.`,
		Example: "  ccgp demo\n  ccgp demo --json\n  ccgp demo --keep-running --rpc-port 26657",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if o.BulkTxs < 0 || o.BulkTxs > 200000 {
				return usagef("--bulk-txs must be 0-200000")
			}
			if !asJSON {
				o.Out = os.Stdout
			} else {
				o.Out = os.Stderr
			}
			sum, err := bench.RunDemo(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(sum)
			}
			fmt.Println()
			fmt.Println("summary")
			t := newTable()
			t.row("chain", fmt.Sprintf("%s, %d validator, height %d", sum.ChainID, sum.Validators, sum.Height))
			t.row("app hash", sum.AppHash)
			t.row("orgs", fmt.Sprintf("%d (%d genesis + admitted by vote)", sum.Orgs, sum.GenesisOrgs))
			t.row("accounts", fmt.Sprint(sum.Accounts))
			t.row("relays / subchains", fmt.Sprintf("%d / %d", sum.Services, sum.Subchains))
			t.row("pipes", fmt.Sprintf("%d (%d active)", sum.Pipes, sum.ActivePipes))
			t.row("set-up txs", fmt.Sprint(sum.SetupTxs))
			t.row("rejections shown", fmt.Sprint(sum.RejectedShown))
			t.row("proofs verified", fmt.Sprint(sum.ProofsVerified))
			if sum.BulkTxs > 0 {
				t.row("governance tx/s", fmt.Sprintf("%.0f (%d txs in bulk, 1 validator)", sum.BulkTxPerSec, sum.BulkTxs))
			}
			t.row("duration", fmt.Sprintf("%.1fs", sum.DurationS))
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the summary as one JSON object (progress goes to stderr)")
	f.BoolVar(&o.KeepRunning, "keep-running", false, "keep the chain running after the summary until Ctrl-C")
	f.IntVar(&o.BulkTxs, "bulk-txs", 5000, "governance txs in the throughput burst (0 skips it)")
	f.IntVar(&o.RPCPort, "rpc-port", 0, "RPC port of the demo node (default: a free port)")
	return cmd
}

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
