package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/govchain"
)

// parsePacket reads a packet reference "PIPE/SEQ" (or "PIPE:SEQ").
func parsePacket(s string) (*govchain.PacketRef, error) {
	i := strings.LastIndexAny(s, "/:")
	if i <= 0 || i == len(s)-1 {
		return nil, usagef("packet %q: write it as PIPE/SEQ, e.g. pipe-1-2/17", s)
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return nil, usagef("packet %q: the sequence must be a number from 1", s)
	}
	return &govchain.PacketRef{Pipe: s[:i], Seq: seq}, nil
}

func stateName(s govchain.PacketState) string {
	if s == govchain.PacketState_PACKET_STATE_UNSPECIFIED {
		return "unknown to the chain"
	}
	return enumName(s.String())
}

func newTxCmd(g *globals) *cobra.Command {
	f := &govFlags{globals: g}
	cmd := &cobra.Command{
		Use:   "tx",
		Short: "Cross-chain transactions: a packet's state and a pipe's ledger",
		Long: `A cross-chain transaction is one packet, named PIPE/SEQ. Its state is derived
on the governance chain from batch anchors (open, receipts, confirmation)
and, for packets that left the happy path, exception records.`,
	}
	f.addFlags(cmd)
	show := &cobra.Command{
		Use:     "show PIPE/SEQ",
		Short:   "A packet's derived state, every record read with a verified proof",
		Example: "  ccgp tx show pipe-1-2/17",
		Args:    exactArgs("PIPE/SEQ"),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := parsePacket(args[0])
			if err != nil {
				return err
			}
			cl, err := f.client(c.Context())
			if err != nil {
				return err
			}
			st, h, err := cl.PacketStatus(c.Context(), ref.Pipe, ref.Seq)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(recordMap(st))
			}
			t := newTable()
			t.row("packet", fmt.Sprintf("%s/%d", st.Pipe, st.Seq))
			t.row("packet id", hex.EncodeToString(st.PacketId))
			t.row("state", stateName(st.State))
			if st.Ledger != nil {
				t.row("batch", fmt.Sprintf("%s/%d (pipe range %d-%d)", st.Ledger.FromRelay, st.Ledger.BatchSeq, st.Ledger.First, st.Ledger.Last))
			}
			if a := st.Anchor; a != nil {
				t.row("anchored", fmt.Sprintf("open at height %d, receipts at %d, confirmed at %d (0: not yet)", a.OpenedHeight, a.ReceiptedHeight, a.ConfirmedHeight))
			}
			if ex := st.Exception; ex != nil {
				t.row("exception", fmt.Sprintf("%s: %s (attempts %d, resolution %q)", stateName(ex.State), ex.Reason, ex.Attempts, ex.Resolution))
				for _, tr := range ex.History {
					t.row("", fmt.Sprintf("height %d: %s — %s", tr.Height, stateName(tr.State), tr.Reason))
				}
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "records proven at height %d\n", h)
			return nil
		},
	}
	var pipe string
	var from, to uint64
	ledger := &cobra.Command{
		Use:     "ledger --pipe P --from N --to M",
		Short:   "A pipe's packets over a sequence range, with their states",
		Example: "  ccgp tx ledger --pipe pipe-1-2 --from 1 --to 100",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if pipe == "" {
				return usagef("--pipe is required")
			}
			if from == 0 || to < from || to-from >= 10000 {
				return usagef("need 1 <= --from <= --to, at most 10000 packets")
			}
			cl, err := f.client(c.Context())
			if err != nil {
				return err
			}
			rows, err := cl.Ledger(c.Context(), pipe, from, to)
			if err != nil {
				return err
			}
			if f.output == "json" {
				type row struct {
					Seq   uint64 `json:"seq"`
					State string `json:"state"`
					Batch string `json:"batch"`
				}
				out := make([]row, len(rows))
				for i, r := range rows {
					out[i] = row{r.Seq, enumName(r.State.String()), fmt.Sprintf("%s/%d", r.FromRelay, r.BatchSeq)}
				}
				return writeJSON(out)
			}
			if len(rows) == 0 {
				fmt.Fprintf(os.Stderr, "pipe %s has nothing anchored in %d-%d\n", pipe, from, to)
				return nil
			}
			t := newTable("SEQ", "STATE", "BATCH")
			for _, r := range rows {
				t.row(fmt.Sprint(r.Seq), stateName(r.State), fmt.Sprintf("%s/%d", r.FromRelay, r.BatchSeq))
			}
			return t.flush()
		},
	}
	ledger.Flags().StringVar(&pipe, "pipe", "", "pipe id")
	ledger.Flags().Uint64Var(&from, "from", 1, "first sequence")
	ledger.Flags().Uint64Var(&to, "to", 100, "last sequence")
	cmd.AddCommand(show, ledger)
	return cmd
}

func newManualCmd(g *globals) *cobra.Command {
	f := &govFlags{globals: g}
	cmd := &cobra.Command{
		Use:   "manual",
		Short: "Packets waiting for a person, and their resolution",
		Long: `The compensator puts a packet in MANUAL when its retries are spent (or when a
verifier finds its receipt contradicted). A person of either org of the
pipe decides: retry (the source relay resends), rollback (the request is
undone on the source chain) or accept (leave it as it is). The decision is
a governance tx; the source relay's compensator carries it out.`,
	}
	f.addFlags(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "Packets in MANUAL",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(c.Context())
			if err != nil {
				return err
			}
			exs, err := cl.Exceptions(c.Context(), govchain.PacketState_PACKET_MANUAL)
			if err != nil {
				return err
			}
			if f.output == "json" {
				rows := make([]map[string]any, len(exs))
				for i, e := range exs {
					rows[i] = recordMap(e)
				}
				return writeJSON(rows)
			}
			if len(exs) == 0 {
				fmt.Fprintln(os.Stderr, "no packets wait for a person")
				return nil
			}
			t := newTable("ID", "ATTEMPTS", "SINCE HEIGHT", "REASON")
			for _, e := range exs {
				t.row(fmt.Sprintf("%s/%d", e.Pipe, e.Seq), fmt.Sprint(e.Attempts), fmt.Sprint(e.Height), e.Reason)
			}
			return t.flush()
		},
	}
	var action, note string
	resolve := &cobra.Command{
		Use:     "resolve ID... --action retry|rollback|accept",
		Short:   "Decide what happens to packets in MANUAL",
		Example: "  ccgp manual resolve pipe-1-2/17 pipe-1-2/18 --action retry --note \"destination back\" --from gov-org-1",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			switch action {
			case "retry", "rollback", "accept":
			default:
				return usagef("--action must be retry, rollback or accept")
			}
			m := &govchain.MsgResolve{Action: action, Note: note}
			for _, a := range args {
				ref, err := parsePacket(a)
				if err != nil {
					return err
				}
				m.Packets = append(m.Packets, ref)
			}
			return f.submit(c, m)
		},
	}
	resolve.Flags().StringVar(&action, "action", "", "retry, rollback or accept")
	resolve.Flags().StringVar(&note, "note", "", "why (recorded on chain)")
	cmd.AddCommand(list, resolve)
	return cmd
}
