package analytics_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/analytics/reconciletest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
)

func openSim(t testing.TB, id string, reject string) *simchain.Chain {
	t.Helper()
	c, err := simchain.Open(t.TempDir(), simchain.Options{ID: id, BlockInterval: 5 * time.Millisecond, RejectPrefix: []byte(reject)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close %s: %v", id, err)
		}
	})
	return c
}

// found is a difference as the tests name it.
type found struct {
	kind analytics.Kind
	pipe string
	seq  uint64
}

func foundOf(rep analytics.Reconciliation) []found {
	out := []found{}
	for _, d := range rep.Differences {
		out = append(out, found{d.Kind, d.Pipe, d.Seq})
	}
	return out
}

func TestReconcileFindsDifferences(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	reconciletest.ReceiptsTable(t, conn, db) // replaced by migration 0002 at merge
	src, dst := openSim(t, "sim-src", ""), openSim(t, "sim-dst", "BAD")
	l := &reconciletest.Ledger{T: t, Conn: conn, DB: db, SrcChain: src.ID(), DstChain: dst.ID()}

	// A clean history: pipe p1 seq 1..250 (batches 1-2 confirmed, 3 open),
	// pipe p2 seq 1..30 in the period too.
	l.Clean(ctx, src, dst, "p1", 250, 2)
	l.Clean(ctx, src, dst, "p2", 30, 0)
	// p1/251 refused by the destination and so rolled back, on the
	// source chain and in the ledger: not a difference.
	refused := reconciletest.Packets(t, "p1", 251, 252, "BAD payload")
	reconciletest.Submit(ctx, t, src, refused)
	outs := reconciletest.Deliver(ctx, t, dst, refused[:1])
	l.Seen("p1", 251, 252)
	l.Receipts(outs)
	if err := src.Rollback(ctx, "p1", 251, "rejected"); err != nil {
		t.Fatal(err)
	}
	l.Exception("p1", 251, "ROLLED_BACK", 1)

	in := analytics.ReconcileInput{
		Conn: conn, Database: db,
		From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour),
		Chains: map[string]subchain.Records{src.ID(): src, dst.ID(): dst},
	}
	rep, err := analytics.Reconcile(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Differences) != 0 {
		t.Fatalf("clean history: %+v", rep.Differences)
	}
	wantCounts := []analytics.PipeCounts{
		{Pipe: "p1", SourceChain: "sim-src", DestChain: "sim-dst", FirstSeq: 1, LastSeq: 252, Packets: 252, Requests: 252, Deliveries: 250, Receipts: 251, Anchored: 251, Confirmed: 200, RolledBack: 1}, // the rolled-back request has no receipt: its batch, and so its anchor, are unknown to the ledger
		{Pipe: "p2", SourceChain: "sim-src", DestChain: "sim-dst", FirstSeq: 1, LastSeq: 30, Packets: 30, Requests: 30, Deliveries: 30, Receipts: 30, Anchored: 30},
	}
	if !slices.Equal(rep.Pipes, wantCounts) {
		t.Fatalf("counts:\n got %+v\nwant %+v", rep.Pipes, wantCounts)
	}

	// The four differences, one packet each.
	if err := dst.EraseDelivery(ctx, "p1", 213); err != nil { // batch 3: receipted, not confirmed
		t.Fatal(err)
	}
	if err := src.Rollback(ctx, "p1", 252, "never recorded"); err != nil {
		t.Fatal(err)
	}
	reconciletest.Deliver(ctx, t, dst, reconciletest.Packets(t, "p2", 7, 7, "payload of p2"))
	more := reconciletest.Packets(t, "p2", 31, 31, "x")
	reconciletest.Submit(ctx, t, src, more)
	l.Seen("p2", 31, 31)
	l.Exception("p2", 31, "CONFIRMED", 1)

	rep, err = analytics.Reconcile(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	want := []found{
		{analytics.DeliveryMissing, "p1", 213},
		{analytics.RollbackUnrecorded, "p1", 252},
		{analytics.ExecutedTwice, "p2", 7},
		{analytics.ConfirmedNotOnChain, "p2", 31},
	}
	if got := foundOf(rep); !slices.Equal(got, want) || rep.Found != 4 || rep.Clean() {
		t.Fatalf("differences:\n got %v (found %d)\nwant %v", got, rep.Found, want)
	}
	// What each party says, for two of them.
	d := rep.Differences[0]
	if d.PacketID != reconciletest.PacketID("p1", 213) || d.Ledger.Receipt != "DELIVERED" || d.Ledger.DestTx == "" || d.Dest.Status != "" || !d.Source.Requested {
		t.Errorf("delivery_missing says %+v", d)
	}
	d = rep.Differences[2]
	if d.Dest.Count != 2 || d.Dest.Status != "DELIVERED" || d.Dest.Tx == "" {
		t.Errorf("executed_twice says %+v", d)
	}
	if rep.Pipes[0].Differences != 2 || rep.Pipes[1].Differences != 2 || rep.Pipes[0].RolledBack != 2 {
		t.Errorf("per-pipe counts: %+v", rep.Pipes)
	}

	// One pipe only.
	one := in
	one.Pipe = "p2"
	if rep, err := analytics.Reconcile(ctx, one); err != nil || len(rep.Pipes) != 1 || !slices.Equal(foundOf(rep), want[2:]) {
		t.Fatalf("--pipe p2: %v %v", foundOf(rep), err)
	}
	// A period the packets are not in.
	before := in
	before.From, before.To = time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour)
	if rep, err := analytics.Reconcile(ctx, before); err != nil || len(rep.Pipes) != 0 || !rep.Clean() {
		t.Fatalf("empty period: %+v %v", rep, err)
	}

	// The ledger corrected: each packet's compensation or resolution.
	l.Exception("p1", 213, "MANUAL", 1)      // a person takes the lost delivery
	l.Exception("p1", 252, "ROLLED_BACK", 1) // the compensator's record of the rollback
	l.Exception("p2", 7, "RESOLVED", 1)      // a person settled the duplicate
	l.Exception("p2", 31, "MANUAL", 2)       // replaces CONFIRMED
	rep, err = analytics.Reconcile(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("after the corrections: %v", foundOf(rep))
	}
}

func TestReconcileBadInput(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	reconciletest.ReceiptsTable(t, conn, db) // replaced by migration 0002 at merge
	l := &reconciletest.Ledger{T: t, Conn: conn, DB: db, SrcChain: "sim-x", DstChain: "sim-y"}
	l.Seen("p", 1, 3)
	now := time.Now()
	for _, tc := range []struct {
		name string
		in   analytics.ReconcileInput
		want error
		msg  string
	}{
		{"from after to", analytics.ReconcileInput{Conn: conn, Database: db, From: now, To: now.Add(-time.Hour)}, analytics.ErrBadPeriod, "not before"},
		{"bad database", analytics.ReconcileInput{Conn: conn, Database: "a-b", From: now.Add(-time.Hour), To: now.Add(time.Hour)}, analytics.ErrBadDatabase, "a-b"},
		{"chains missing", analytics.ReconcileInput{Conn: conn, Database: db, From: now.Add(-time.Hour), To: now.Add(time.Hour)}, analytics.ErrChainMissing, "sim-x, sim-y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := analytics.Reconcile(ctx, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v with %q", err, tc.want, tc.msg)
			}
		})
	}
}

// TestCompare is the core's table: what each party says, and the kinds.
func TestCompare(t *testing.T) {
	delivered := analytics.DestSays{Status: "DELIVERED", Count: 1}
	receipted := analytics.LedgerSays{Seen: true, Receipt: "DELIVERED", DestTx: "ab"}
	confirmed := receipted
	confirmed.Confirmed = true
	with := func(l analytics.LedgerSays, exc string) analytics.LedgerSays { l.Exception = exc; return l }
	req := analytics.SourceSays{Requested: true}
	rolled := analytics.SourceSays{Requested: true, RolledBack: true}
	for _, tc := range []struct {
		name string
		says analytics.Says
		want []analytics.Kind
	}{
		{"clean delivery", analytics.Says{Source: req, Ledger: receipted, Dest: delivered}, nil},
		{"clean confirmed", analytics.Says{Source: req, Ledger: confirmed, Dest: delivered}, nil},
		{"in flight: no receipt, not executed", analytics.Says{Source: req, Ledger: analytics.LedgerSays{Seen: true}}, nil},
		{"delivery missing", analytics.Says{Source: req, Ledger: receipted}, []analytics.Kind{analytics.DeliveryMissing}},
		{"receipt without dest tx is no delivery", analytics.Says{Source: req, Ledger: analytics.LedgerSays{Receipt: "DELIVERED"}}, nil},
		{"chain refused what the ledger delivered", analytics.Says{Source: req, Ledger: receipted, Dest: analytics.DestSays{Status: "REJECTED", Count: 1}}, []analytics.Kind{analytics.DeliveryMissing}},
		{"confirmed by anchor, not on chain", analytics.Says{Source: req, Ledger: confirmed}, []analytics.Kind{analytics.ConfirmedNotOnChain}},
		{"confirmed by exception, not on chain", analytics.Says{Source: req, Ledger: with(analytics.LedgerSays{Seen: true}, "CONFIRMED")}, []analytics.Kind{analytics.ConfirmedNotOnChain}},
		{"exception governs the anchor", analytics.Says{Source: req, Ledger: with(confirmed, "FAILED"), Dest: analytics.DestSays{}}, []analytics.Kind{analytics.DeliveryMissing}},
		{"rollback unrecorded", analytics.Says{Source: rolled, Ledger: analytics.LedgerSays{Seen: true, Receipt: "REJECTED"}, Dest: analytics.DestSays{Status: "REJECTED", Count: 1}}, []analytics.Kind{analytics.RollbackUnrecorded}},
		{"rollback recorded", analytics.Says{Source: rolled, Ledger: with(receipted, "ROLLED_BACK")}, nil},
		{"rollback resolved later", analytics.Says{Source: rolled, Ledger: with(receipted, "RESOLVED")}, nil},
		{"rollback under MANUAL", analytics.Says{Source: rolled, Ledger: with(receipted, "MANUAL")}, nil},
		{"executed twice", analytics.Says{Source: req, Ledger: receipted, Dest: analytics.DestSays{Status: "DELIVERED", Count: 2}}, []analytics.Kind{analytics.ExecutedTwice}},
		{"refused twice is not executed twice", analytics.Says{Source: req, Dest: analytics.DestSays{Status: "REJECTED", Count: 2}}, nil},
		{"executed twice after a rollback record", analytics.Says{Source: rolled, Ledger: with(receipted, "ROLLED_BACK"), Dest: analytics.DestSays{Status: "DELIVERED", Count: 3}}, []analytics.Kind{analytics.ExecutedTwice}},
		{"everything at once", analytics.Says{Source: rolled, Ledger: confirmed}, []analytics.Kind{analytics.ConfirmedNotOnChain, analytics.RollbackUnrecorded}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := analytics.Compare(tc.says); !slices.Equal(got, tc.want) {
				t.Fatalf("Compare(%+v) = %v, want %v", tc.says, got, tc.want)
			}
		})
	}
}
