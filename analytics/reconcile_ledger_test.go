package analytics

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/analytics/reconciletest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
)

// TestLedgerPacketWindows: the packets stream reads a range in windows,
// two queries in flight; any window size gives the same rows, and a
// consumer may stop early.
func TestLedgerPacketWindows(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	reconciletest.ReceiptsTable(t, conn, db) // replaced by migration 0002 at merge
	open := func(id string) *simchain.Chain {
		c, err := simchain.Open(t.TempDir(), simchain.Options{ID: id, BlockInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	src, dst := open("s"), open("d")
	l := &reconciletest.Ledger{T: t, Conn: conn, DB: db, SrcChain: "s", DstChain: "d"}
	l.Clean(ctx, src, dst, "p", 250, 1)

	read := func(window, first, last uint64, stopAfter int) []ledgerPacket {
		var out []ledgerPacket
		for r, err := range (chLedger{conn: conn, db: db, window: window}).packets(ctx, "p", first, last) {
			if err != nil {
				t.Fatal(err)
			}
			if out = append(out, r); len(out) == stopAfter {
				break
			}
		}
		return out
	}
	all := read(0, 1, 250, -1)
	if len(all) != 250 || all[0].seq != 1 || all[249].seq != 250 || !all[0].confirmed || all[150].confirmed || !all[150].anchored ||
		all[7].receipt != "DELIVERED" || !all[7].hasDestTx {
		t.Fatalf("one window: %d rows, first %+v", len(all), all[0])
	}
	for _, w := range []uint64{1, 7, 100, 249, 250, 1000} {
		if got := read(w, 1, 250, -1); !slices.Equal(got, all) {
			t.Fatalf("window %d: %d rows, differ from one window's", w, len(got))
		}
	}
	if got := read(7, 20, 30, -1); !slices.Equal(got, all[19:30]) {
		t.Fatalf("window 7 over 20..30: %+v", got)
	}
	if got := read(7, 1, 250, 10); !slices.Equal(got, all[:10]) {
		t.Fatalf("stopped after 10: %d rows", len(got))
	}
	if got := read(7, 300, 400, -1); len(got) != 0 {
		t.Fatalf("empty range: %+v", got)
	}
}
