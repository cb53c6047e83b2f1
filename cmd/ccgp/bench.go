package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/crypto"
)

func newBenchCmd(g *globals) *cobra.Command {
	var o bench.RunOptions
	var asJSON, child bool
	var shards, kafka, mode, suite, cpuprofile, memprofile, printFile string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the platform end to end, beside the ceilings of its parts",
		Long: `Run the whole path in this process (a governance chain node, the embedded
Kafka broker, three simulated subchains, their relays and router shards),
with packets signed beforehand so that the apps' signing does not share
the cores: warm up, measure a window, drain, and print the figures beside
the ceilings measured in the same run on the same GOMAXPROCS.

Figures: end-to-end packets/s (source chain commit to receipted at the
source, and anchored once anchors run); latency p50/p99/p999 to delivered
(destination chain commit), receipted and confirmed; governance txs,
AMDP wire bytes, allocations and CPU seconds per packet. Ceilings: Ed25519
verifications/s (one at a time and in batches), kfake records/s, QUIC
loopback MB/s, and the per-packet anchoring baseline (one governance tx
per packet against the same node). Lost and duplicated come from the
destination chains' own records.

Without --rate the loop is closed (maximum throughput, --window packets in
flight per pipe); --rate runs an open loop at that many packets/s (latency
under load). --shards 1,2,4 runs each count in its own process (this
binary again) and prints packets/s per count.

--clickhouse ADDR (a server's native TCP port) also runs the analytics
sink and the governance follower in this process, into a database of
their own that is dropped at the end. Their CPU is the part "analytics"
of the breakdown, apart from the relays' (deployed, they are another
process), and the figures add the sink's rows/s in the window, its largest
consumer lag and the ledger's rows per table.`,
		Example: `  ccgp bench --duration 30s --json
  ccgp bench --rate 10000 --duration 30s          # open loop
  ccgp bench --mode strict --rate 5000
  ccgp bench --shards 1,2,4 --duration 15s
  ccgp bench --duration 30s --cpuprofile cpu.out  # then: go tool pprof cpu.out
  ccgp bench --duration 30s --json --clickhouse $(.ci/clickhouse start /tmp/ch)
  ccgp bench gov --validators 4 --txs 20000`,
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if printFile != "" {
				b, err := os.ReadFile(printFile)
				if err != nil {
					return err
				}
				r := &bench.Result{}
				if err := json.Unmarshal(b, r); err != nil {
					return fmt.Errorf("--print %s: %w", printFile, err)
				}
				return printBench(r)
			}
			switch {
			case o.Duration < time.Second || o.Duration > 24*time.Hour:
				return usagef("--duration must be between 1s and 24h")
			case o.Warmup < time.Second:
				return usagef("--warmup must be at least 1s")
			case o.Rate < 0 || o.Rate > 1_000_000:
				return usagef("--rate must be 0 (closed loop) to 1000000 packets/s")
			case o.Pipes < 1 || o.Pipes > 96:
				return usagef("--pipes must be 1-96")
			case o.Payload < 1 || o.Payload > 64<<10:
				return usagef("--payload must be 1-65536 bytes")
			case o.Window < 1:
				return usagef("--window must be at least 1")
			}
			switch mode {
			case "optimistic":
			case "strict":
				o.Strict = true
			default:
				return usagef("--mode must be strict or optimistic, not %q", mode)
			}
			if suite != string(crypto.SuiteEd25519) {
				return usagef("--suite %q: only %s is implemented", suite, crypto.SuiteEd25519)
			}
			o.Suite = crypto.Suite(suite)
			if o.BaselineKind != bench.BaselineOpenBatch && o.BaselineKind != bench.BaselineRegisterNode {
				return usagef("--baseline-tx must be %s or %s", bench.BaselineOpenBatch, bench.BaselineRegisterNode)
			}
			counts, err := parseCounts(shards)
			if err != nil {
				return err
			}
			if kafka != "" {
				o.Brokers = strings.Split(kafka, ",")
			}
			o.Logger = g.logger()
			o.Progress = os.Stderr
			if len(counts) > 1 {
				if child {
					return usagef("--shards takes one count in a child run")
				}
				return benchShards(c, o, counts, cpuprofile, asJSON)
			}
			o.Shards = counts[0]
			if cpuprofile != "" {
				f, err := os.Create(cpuprofile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				o.CPUProfile = f
			}
			if memprofile != "" {
				o.MemProfile = func(end bool) (io.WriteCloser, error) {
					if end {
						return os.Create(memprofile)
					}
					return os.Create(memprofile + ".start")
				}
			}
			r, err := bench.Run(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON || child {
				return writeJSON(r)
			}
			return printBench(r)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "the measured window")
	f.DurationVar(&o.Warmup, "warmup", 5*time.Second, "traffic before the window")
	f.IntVar(&o.Rate, "rate", 0, "open loop at this many packets/s over all pipes (0: closed loop)")
	f.IntVar(&o.Window, "window", 4096, "closed loop: packets in flight per pipe")
	f.StringVar(&shards, "shards", "1", "router shards per relay; a list (1,2,4) runs each count in its own process")
	f.IntVar(&o.Pipes, "pipes", 12, "pipes over the three participants")
	f.IntVar(&o.Payload, "payload", 256, "payload bytes per packet")
	f.StringVar(&suite, "suite", string(crypto.SuiteEd25519), "the apps' signing suite")
	f.StringVar(&mode, "mode", "optimistic", "pipe consistency mode: strict or optimistic")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the window to this file")
	f.StringVar(&memprofile, "memprofile", "", "write the allocation profile at the window's end to this file (and its start to FILE.start)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object (progress goes to stderr)")
	f.IntVar(&o.BaselineTxs, "baseline-txs", 10000, "txs in the per-packet baseline (negative: skip it)")
	f.StringVar(&o.BaselineKind, "baseline-tx", bench.BaselineOpenBatch, "the per-packet baseline's tx: open-batch or register-node")
	f.DurationVar(&o.CeilingTime, "ceiling-time", 2*time.Second, "how long each ceiling is measured")
	f.DurationVar(&o.ChainInterval, "chain-interval", 50*time.Millisecond, "simulated chains' block interval")
	f.DurationVar(&o.GovInterval, "gov-interval", 100*time.Millisecond, "governance chain's block interval")
	f.DurationVar(&o.GovTxEvery, "gov-tx-every", 0, "how often relays pack their governance txs (0: the relay's default)")
	f.StringVar(&kafka, "kafka", "", "Kafka brokers host:port,... (default: an embedded kfake broker)")
	f.StringVar(&o.ClickHouse, "clickhouse", "", "ClickHouse native address host:port: run the analytics sink and follower during the run")
	f.BoolVar(&child, "child", false, "run one shard count for a parent bench and print JSON")
	f.BoolVar(&o.SkipCeilings, "skip-ceilings", false, "do not measure the ceilings")
	f.BoolVar(&o.SignLive, "sign-live", false, "open loop: sign packets as they are sent (long runs: no pool in memory)")
	f.IntVar(&o.BatchPackets, "batch-packets", 4096, "router: packets per batch (the router's own default is 512)")
	f.IntVar(&o.MaxPoll, "max-poll", 16384, "router: records per cycle (the router's own default is 4096)")
	f.DurationVar(&o.Linger, "linger", 0, "router: wait for more records after the first (0: the router's default)")
	f.BoolVar(&o.NoAnchors, "no-anchors", false, "diagnostic: routers do not anchor batches (the data path alone)")
	f.StringVar(&printFile, "print", "", "print the table of a run saved with --json, and measure nothing")
	_ = f.MarkHidden("child")

	var g1 bench.GovOptions
	var govJSON bool
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
			if g1.Validators < 1 || g1.Validators > 16 {
				return usagef("--validators must be 1-16")
			}
			if g1.Txs < 1 || g1.Txs > 50000 {
				return usagef("--txs must be 1-50000 (the mempool holds 50000)")
			}
			g1.Progress = func(done, total int, h int64) {
				fmt.Fprintf(os.Stderr, "\r%d/%d committed, height %d   ", done, total, h)
			}
			r, err := bench.GovThroughput(c.Context(), g1)
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return err
			}
			if govJSON {
				return writeJSON(r)
			}
			t := newTable("VALIDATORS", "TXS", "COMMITTED", "REJECTED", "BLOCKS", "SECONDS", "TX/S")
			t.row(fmt.Sprint(r.Validators), fmt.Sprint(r.Txs), fmt.Sprint(r.Committed), fmt.Sprint(r.Rejected),
				fmt.Sprint(r.Blocks), fmt.Sprintf("%.2f", r.Seconds), fmt.Sprintf("%.0f", r.TxPerSecond))
			return t.flush()
		},
	}
	gov.Flags().IntVar(&g1.Validators, "validators", 1, "validators in the network")
	gov.Flags().IntVar(&g1.Txs, "txs", 20000, "txs in the burst")
	gov.Flags().DurationVar(&g1.BlockInterval, "block-interval", 100*time.Millisecond, "CometBFT timeout_commit")
	gov.Flags().BoolVar(&govJSON, "json", false, "print one JSON object")
	cmd.AddCommand(gov)
	return cmd
}

// parseCounts parses "1,2,4".
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 {
			return nil, usagef("--shards takes counts of 1-64 separated by commas, not %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchShards measures the ceilings here, then runs one child process of
// this binary per shard count (so that runs share no memory, goroutines
// or caches) and prints packets/s per count.
func benchShards(c *cobra.Command, o bench.RunOptions, counts []int, cpuprofile string, asJSON bool) error {
	fmt.Fprintf(os.Stderr, "ceilings (%s each, GOMAXPROCS %d)\n", o.CeilingTime, bench.GOMAXPROCS())
	ce, err := bench.MeasureCeilings(c.Context(), o.CeilingTime, o.Payload)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find this binary: %w", err)
	}
	// Every flag the user set goes to the children, except those that
	// the parent handles.
	var pass []string
	c.Flags().Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "shards", "json", "cpuprofile", "memprofile", "child", "skip-ceilings", "print":
			return
		}
		pass = append(pass, "--"+fl.Name+"="+fl.Value.String())
	})
	c.InheritedFlags().Visit(func(fl *pflag.Flag) { pass = append(pass, "--"+fl.Name+"="+fl.Value.String()) })
	var runs []*bench.Result
	for _, n := range counts {
		args := append([]string{"bench", "--child", "--skip-ceilings", "--shards", strconv.Itoa(n)}, pass...)
		if cpuprofile != "" {
			args = append(args, "--cpuprofile", fmt.Sprintf("%s.shards%d", cpuprofile, n))
		}
		fmt.Fprintf(os.Stderr, "--- %d shard(s) per relay: %s %s\n", n, self, strings.Join(args, " "))
		cmd := exec.CommandContext(c.Context(), self, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("bench: %d shard(s): %w", n, err)
		}
		r := &bench.Result{}
		if err := json.Unmarshal(out.Bytes(), r); err != nil {
			return fmt.Errorf("bench: %d shard(s): reading its result: %w", n, err)
		}
		r.SetCeilings(ce)
		runs = append(runs, r)
	}
	if asJSON {
		return writeJSON(struct {
			Runs []*bench.Result `json:"runs"`
		}{runs})
	}
	t := newTable("SHARDS/RELAY", "PACKETS/S", "P50 DELIVERED", "P99 DELIVERED", "CPU S/1000", "E2E/VERIFY", "E2E/BASELINE", "LOST", "DUPLICATED")
	for _, r := range runs {
		t.row(fmt.Sprint(r.Shards), fmt.Sprintf("%.0f", r.E2EPacketsPerS), ms(r.P50DeliveredMs), ms(r.P99DeliveredMs),
			fmt.Sprintf("%.3f", r.CPUSPer1000), fmt.Sprintf("%.3f", r.RatioVerify), fmt.Sprintf("%.1f", r.RatioBaseline),
			fmt.Sprint(r.Lost), fmt.Sprint(r.Duplicated))
	}
	return t.flush()
}

func ms(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", *v)
}

// printBench prints one run as a table.
func printBench(r *bench.Result) error {
	t := newTable()
	loop := r.Loop + " loop"
	if r.Loop == "open" {
		loop += fmt.Sprintf(" at %d packets/s", r.RateTarget)
	}
	t.row("run", fmt.Sprintf("%s, %s pipes, %d pipes, %d shard(s)/relay, %d-byte payloads, %s, GOMAXPROCS %d, window %.1fs",
		loop, r.Mode, r.Pipes, r.Shards, r.Payload, r.Suite, r.GOMAXPROCS, r.WindowS))
	t.row("end to end", fmt.Sprintf("%.0f packets/s (delivered %.0f/s, receipted %.0f/s, anchored %s/s, confirmed %s/s)",
		r.E2EPacketsPerS, r.DeliveredPerS, r.ReceiptedPerS, rate(r.AnchoredPerS), rate(r.ConfirmedPerS)))
	t.row("to delivered", fmt.Sprintf("p50 %s  p99 %s  p999 %s", ms(r.P50DeliveredMs), ms(r.P99DeliveredMs), ms(r.P999DeliveredMs)))
	t.row("to receipted", fmt.Sprintf("p50 %s  p99 %s  p999 %s", ms(r.P50ReceiptedMs), ms(r.P99ReceiptedMs), ms(r.P999ReceiptedMs)))
	t.row("to anchored", fmt.Sprintf("p50 %s  p99 %s", ms(r.P50AnchoredMs), ms(r.P99AnchoredMs)))
	t.row("to confirmed", fmt.Sprintf("p50 %s  p99 %s  p999 %s", ms(r.P50ConfirmedMs), ms(r.P99ConfirmedMs), ms(r.P999ConfirmedMs)))
	t.row("per packet", fmt.Sprintf("%.6f govchain txs, %.0f wire bytes (zstd %.2fx), %.1f allocs (%.0f B), %.3f CPU s per 1000",
		r.ChainTxsPerPacket, r.WireBytesPerPacket, r.ZstdRatio, r.AllocsPerPacket, r.AllocBytesPerPkt, r.CPUSPer1000))
	t.row("ceilings", fmt.Sprintf("verify %.0f/s in batches, %.0f/s one by one; kafka %.0f records/s; quic %.0f MB/s",
		r.VerifyCeilingBatchPerS, r.VerifyCeilingSinglePerS, r.KafkaCeilingPerS, r.QUICCeilingMBps))
	t.row("per-packet baseline", fmt.Sprintf("%.0f packets/s (one %s tx per packet)", r.PerPacketBaselinePerS, r.PerPacketBaselineTx))
	t.row("e2e / verify ceiling", fmt.Sprintf("%.3f (batch), %.3f (one by one); %.3f counting the %d verifications per packet",
		r.RatioVerify, r.RatioVerifySingle, r.RatioVerifyPerRelay, r.VerifiesPerPacket))
	t.row("e2e / baseline", fmt.Sprintf("%.1f", r.RatioBaseline))
	if r.RelayCPUSPer1000 > 0 {
		t.row("relays alone", fmt.Sprintf("%.4f CPU s per 1000 packets, %.0f%% of it signature checks: %.0f packets/s on these cores; x%d verifications / verify ceiling = %.3f",
			r.RelayCPUSPer1000, 100*r.VerifyShareOfRelayCPU, r.RelayCeilingPerS, r.VerifiesPerPacket, r.RatioVerifyRelay))
	}
	for _, c := range r.CPUByPart {
		v := ""
		if c.VerifyShare > 0 {
			v = fmt.Sprintf(" (%.0f%% signature checks)", 100*c.VerifyShare)
		}
		t.row("  cpu "+c.Part, fmt.Sprintf("%.4f s per 1000 packets, %4.1f%%%s", c.SPer1000, 100*c.Share, v))
	}
	if r.AnalyticsSinkRowsPerS != nil {
		var rows []string
		for _, name := range bench.LedgerTables() {
			rows = append(rows, fmt.Sprintf("%s %d", name, r.AnalyticsRows[name]))
		}
		t.row("analytics", fmt.Sprintf("sink %.0f rows/s in the window, largest lag %d records (%d at the window's end); ledger: %s",
			*r.AnalyticsSinkRowsPerS, deref(r.AnalyticsSinkMaxLag), deref(r.AnalyticsSinkLagEnd), strings.Join(rows, ", ")))
	}
	t.row("accounting", fmt.Sprintf("%d sent, %d delivered, %d receipted, %d rejected, %d lost, %d duplicated",
		r.Sent, r.Delivered, r.Receipted, r.Rejected, r.Lost, r.Duplicated))
	t.row("memory", fmt.Sprintf("RSS %.1f MiB at the window's start, %.1f MiB at its end", r.RSSMBWindowStart, r.RSSMBWindowEnd))
	for _, s := range r.RSSSamples {
		t.row("", fmt.Sprintf("at %3.0fs: RSS %.1f MiB, live heap %.1f MiB", s.AtS, s.RSSMB, s.HeapMB))
	}
	for _, n := range r.Notes {
		t.row("note", n)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if r.Lost > 0 || r.Duplicated > 0 {
		return fmt.Errorf("%d packets lost and %d duplicated", r.Lost, r.Duplicated)
	}
	return nil
}

func rate(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", *v)
}

func deref(v *int64) int64 {
	if v == nil {
		return 0
	}
	return *v
}
