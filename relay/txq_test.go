package relay

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/govchain"
)

// TestTxqGivesUpToManual: the queue's rule for a governance refusal. An
// anchor or confirmation that nobody waits for and that governance
// refuses for good (at once, or after its last try while its
// precondition never came) is not dropped: its packets come back as a
// MANUAL exception item, queued like any tx, with the refusal as the
// reason. A precondition not met yet is retried until the last try; an
// item somebody waits for hands the refusal to the waiter; "exists" is
// success; an infrastructure failure is retried. An item is settled (its
// caller's durable record dropped) on success or "exists", or once its
// MANUAL item commits; never while it is retried.
func TestTxqGivesUpToManual(t *testing.T) {
	refs := []*govchain.PacketRef{{Pipe: "pipe-a", Seq: 1}, {Pipe: "pipe-a", Seq: 2}}
	refused := func(code *govchain.TxError, msg string) error {
		return fmt.Errorf("tx: %w", &govchain.TxError{Code: code.Code, Msg: msg})
	}
	receipts := func(tries int) *txItem {
		return &txItem{receipts: &govchain.BatchReceipts{FromRelay: "relay-a", BatchSeq: 5}, packets: refs, tries: tries}
	}
	const last = 3
	for _, tc := range []struct {
		name string
		item *txItem
		err  error
		// want: "retry" (the item back), "done" (nothing back, waiter
		// told nil), "waiter" (nothing back, waiter told the refusal), or
		// a MANUAL reason fragment.
		want string
	}{
		{"receipt anchor before its open anchor: retried", receipts(0), refused(govchain.ErrNotFound, "no open anchor"), "retry"},
		{"receipt anchor, open anchor never came: MANUAL", receipts(last), refused(govchain.ErrNotFound, "no open anchor"),
			"governance refused the receipt anchor after 4 tries: no open anchor"},
		{"receipt anchor refused outright: MANUAL", receipts(0), refused(govchain.ErrInvalid, "statuses differ in number"),
			"governance refused the receipt anchor after 1 tries: statuses differ in number"},
		{"confirmation before its receipts: retried", &txItem{confirm: &govchain.BatchRef{FromRelay: "relay-a", BatchSeq: 5}, packets: refs},
			refused(govchain.ErrBadState, "batch not receipted"), "retry"},
		{"confirmation refused at its last try: MANUAL", &txItem{confirm: &govchain.BatchRef{FromRelay: "relay-a", BatchSeq: 5}, packets: refs, tries: last},
			refused(govchain.ErrBadState, "batch not receipted"), "governance refused the batch confirmation after 4 tries"},
		{"already anchored: done", receipts(0), refused(govchain.ErrExists, "anchored"), "done"},
		{"governance unreachable: retried", receipts(last), fmt.Errorf("broadcast: %w", context.DeadlineExceeded), "retry"},
		{"exception refused: its waiter decides", &txItem{exception: &govchain.MsgTxException{Packets: refs}, done: make(chan error, 1)},
			refused(govchain.ErrUnauthorized, "not a party"), "waiter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			q := newTxq(nil, nil, slog.New(slog.NewTextHandler(&log, nil)), 0)
			q.maxTries = last
			settled := 0
			tc.item.settled = func() { settled++ }
			back := q.failed([]*txItem{tc.item}, tc.err)
			if want := map[bool]int{true: 1, false: 0}[tc.want == "done"]; settled != want {
				t.Fatalf("settled %d times, want %d", settled, want)
			}
			switch tc.want {
			case "retry":
				if len(back) != 1 || back[0] != tc.item {
					t.Fatalf("got %v, want the item back to retry", back)
				}
			case "done", "waiter":
				if len(back) != 0 {
					t.Fatalf("got %d items back, want none", len(back))
				}
				if tc.item.done != nil {
					if err := <-tc.item.done; (err == nil) != (tc.want == "done") {
						t.Fatalf("waiter told %v", err)
					}
				}
			default:
				if len(back) != 1 || back[0].exception == nil {
					t.Fatalf("got %v, want one MANUAL exception item", back)
				}
				m := back[0].exception
				if m.State != govchain.PacketState_PACKET_MANUAL || !strings.Contains(m.Reason, tc.want) || len(m.Packets) != len(refs) {
					t.Fatalf("exception %v %q for %d packets, want MANUAL %q for %d", m.State, m.Reason, len(m.Packets), tc.want, len(refs))
				}
				if len(back[0].packets) != 0 {
					t.Fatal("the MANUAL item carries packets: its own refusal would raise another")
				}
				if !strings.Contains(log.String(), "level=ERROR") {
					t.Errorf("give-up not logged as an error:\n%s", log.String())
				}
				back[0].finish(nil) // the MANUAL record committed
				if settled != 1 {
					t.Fatalf("settled %d times once the MANUAL record committed, want 1", settled)
				}
			}
		})
	}
}

// TestSplitException: a record of more packets than one tx holds is cut
// into parts under the bound, in order, each with the state and reason.
func TestSplitException(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		pipe  string
		parts int
	}{
		{"one packet", 1, "pipe-1-2", 1},
		{"a batch's worth of short pipe ids", 4096, "pipe-1-2", 3},
		{"long pipe ids", 1000, strings.Repeat("p", 128), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &govchain.MsgTxException{State: govchain.PacketState_PACKET_MANUAL, Reason: strings.Repeat("r", 200)}
			for i := range tc.n {
				m.Packets = append(m.Packets, &govchain.PacketRef{Pipe: tc.pipe, Seq: uint64(1<<40 + i)})
			}
			parts := splitException(m)
			if len(parts) != tc.parts {
				t.Fatalf("%d parts, want %d", len(parts), tc.parts)
			}
			var seqs []uint64
			for _, p := range parts {
				if p.State != m.State || p.Reason != m.Reason {
					t.Fatalf("part lost the state or reason: %v", p)
				}
				if sz := proto.Size(p); sz > govchain.DefaultMaxTxBytes-8<<10 {
					t.Fatalf("part of %d bytes: no room under the chain's %d for the envelope", sz, govchain.DefaultMaxTxBytes)
				}
				for _, r := range p.Packets {
					seqs = append(seqs, r.Seq)
				}
			}
			if len(seqs) != tc.n || !slices.IsSorted(seqs) {
				t.Fatalf("parts hold %d packets (in order: %v), want all %d in order", len(seqs), slices.IsSorted(seqs), tc.n)
			}
		})
	}
}
