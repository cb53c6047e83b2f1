package analytics_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

// ledgerTables are the tables the migrations must create.
var ledgerTables = []string{"anchors", "anomalies", "batches", "credit_scores", "exceptions", "governance", "offenders", "packets", "receipts", "schema_migrations"}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAnalyticsMigrationsEmbedded(t *testing.T) {
	ms, err := analytics.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || analytics.LatestVersion() != ms[len(ms)-1].Version {
		t.Fatalf("migrations: %+v, latest %d", ms, analytics.LatestVersion())
	}
}

func TestAnalyticsMigrateEmpty(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx := testCtx(t)
	rep, err := analytics.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 0 || rep.To != analytics.LatestVersion() || len(rep.Applied) != analytics.LatestVersion() {
		t.Fatalf("report %+v, latest %d", rep, analytics.LatestVersion())
	}
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if !slices.Equal(got, ledgerTables) {
		t.Fatalf("tables %v, want %v", got, ledgerTables)
	}
}

func TestAnalyticsMigrateTwiceIsNoop(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx := testCtx(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	rep, err := analytics.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	latest := analytics.LatestVersion()
	if rep.From != latest || rep.To != latest || len(rep.Applied) != 0 {
		t.Fatalf("second run: %+v", rep)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations FINAL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != uint64(latest) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, latest)
	}
}

func TestAnalyticsMigrateRefusesNewer(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx := testCtx(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	chtest.FromTheFuture(t, conn, db)
	rep, err := analytics.Migrate(ctx, conn, db)
	if !errors.Is(err, analytics.ErrSchemaNewer) {
		t.Fatalf("Migrate on a version-999 database: %v, want ErrSchemaNewer", err)
	}
	if rep.From != 999 || len(rep.Applied) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestAnalyticsMigrateBadDatabase(t *testing.T) {
	conn, _, _ := chtest.Database(t)
	if _, err := analytics.Migrate(testCtx(t), conn, "x; DROP"); !errors.Is(err, analytics.ErrBadDatabase) {
		t.Fatalf("got %v, want ErrBadDatabase", err)
	}
}

// TestAnalyticsReplacingDedup: the same natural key written twice (a
// redelivery) and then a later state reads as one row through FINAL, in
// the same insert and across inserts, before any merge.
func TestAnalyticsReplacingDedup(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx := testCtx(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	insert := func(status string, version uint64, dup int) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".packets (pipe, seq, packet_id, event_ms, status, dest_tx, dest_height, version)")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < dup; i++ {
			if err := b.Append("pipe-a", uint64(7), "ab12", uint64(1764720000123), status, "tx9", uint64(42), version); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	insert("SENT", 1, 2)
	insert("SENT", 1, 1)
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".packets FINAL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("FINAL count after a redelivery: %d, want 1", n)
	}
	insert("RECEIPTED", 3, 1)
	p, err := analytics.PacketStatus(ctx, conn, db, "pipe-a", 7)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != "RECEIPTED" || p.Version != 3 || p.DestHeight != 42 {
		t.Fatalf("latest state %+v", p)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".packets FINAL").Scan(&n); err != nil || n != 1 {
		t.Fatalf("FINAL count after a later state: %d, %v", n, err)
	}
	if _, err := analytics.PacketStatus(ctx, conn, db, "pipe-a", 8); !errors.Is(err, analytics.ErrNotFound) {
		t.Fatalf("missing packet: %v, want ErrNotFound", err)
	}
}
