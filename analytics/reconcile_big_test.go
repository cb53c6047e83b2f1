package analytics_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/analytics/reconciletest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
)

// TestReconcile10M measures Reconcile over a clean history of 10 million
// packets (one pipe) on real simchain stores and ClickHouse; the bound is
// a minute on a 2-core machine. It builds the history first (minutes), so
// it runs only when asked:
//
//	CCGP_RECONCILE_10M=1 go test -count=1 -timeout 60m ./analytics -run TestReconcile10M -v
//
// CCGP_RECONCILE_N sets another size (e.g. 1000000).
func TestReconcile10M(t *testing.T) {
	if os.Getenv("CCGP_RECONCILE_10M") != "1" {
		t.Skip("set CCGP_RECONCILE_10M=1 to build 10 million packets and time their reconciliation")
	}
	n := uint64(10_000_000)
	if v := os.Getenv("CCGP_RECONCILE_N"); v != "" {
		var err error
		if n, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CCGP_RECONCILE_N: %v", err)
		}
	}
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	reconciletest.ReceiptsTable(t, conn, db) // replaced by migration 0002 at merge
	big := func(id string) *simchain.Chain {
		c, err := simchain.Open(t.TempDir(), simchain.Options{ID: id, BlockInterval: time.Millisecond, MaxTxsPerBlock: 20000})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	src, dst := big("sim-src"), big("sim-dst")
	l := &reconciletest.Ledger{T: t, Conn: conn, DB: db, SrcChain: src.ID(), DstChain: dst.ID()}
	start := time.Now()
	l.Clean(ctx, src, dst, "big", n, n/reconciletest.BatchSize/2)
	// One packet of each kind of difference, so the run is not only the
	// clean path.
	if err := dst.EraseDelivery(ctx, "big", n-1); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d packets in %v", n, time.Since(start).Round(time.Second))

	start = time.Now()
	rep, err := analytics.Reconcile(ctx, analytics.ReconcileInput{
		Conn: conn, Database: db,
		From: time.Now().Add(-2 * time.Hour), To: time.Now().Add(time.Hour),
		Chains: map[string]subchain.Records{src.ID(): src, dst.ID(): dst},
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Pipes[0]
	t.Logf("reconciled %d packets in %v (%.0f packets/s): %+v, differences %v", p.Packets, took.Round(time.Millisecond), float64(p.Packets)/took.Seconds(), p, rep.ByKind)
	if p.Packets != n || p.Requests != n || p.Deliveries != n-1 || rep.Found != 1 || rep.ByKind[analytics.DeliveryMissing] != 1 {
		t.Fatalf("report: %+v", rep)
	}
	if n >= 10_000_000 && took > time.Minute {
		t.Errorf("10M packets took %v, the bound is a minute", took)
	}
}
