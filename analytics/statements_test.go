package analytics

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

func TestAnalyticsStatements(t *testing.T) {
	got := statements("-- head\nCREATE TABLE a (\n  x String -- ok; not an end\n);\n\n-- between\nCREATE TABLE b (y UInt8);\nSELECT 1")
	want := []string{"CREATE TABLE a (\n  x String -- ok; not an end\n)", "CREATE TABLE b (y UInt8)", "SELECT 1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statements:\n%q\nwant\n%q", got, want)
	}
}

// TestAnalyticsMigrateAddColumnRerun: a rerun ADD COLUMN (a migration cut
// off after it) is recognised as done, on the real server; other errors
// are not.
func TestAnalyticsMigrateAddColumnRerun(t *testing.T) {
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE TABLE "+db+".t (a String) ENGINE = MergeTree ORDER BY a"); err != nil {
		t.Fatal(err)
	}
	add := "ALTER TABLE " + db + ".t ADD COLUMN b UInt8"
	if err := conn.Exec(ctx, add); err != nil {
		t.Fatal(err)
	}
	err := conn.Exec(ctx, add)
	if err == nil || !columnExists(add, err) {
		t.Fatalf("second ADD COLUMN: %v, want recognised as already applied", err)
	}
	bad := "ALTER TABLE " + db + ".nosuch ADD COLUMN b UInt8"
	if err := conn.Exec(ctx, bad); err == nil || columnExists(bad, err) {
		t.Fatalf("ADD COLUMN on a missing table: %v, want a real error", err)
	}
}
