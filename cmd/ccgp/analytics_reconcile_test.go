package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/analytics/reconciletest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
)

// TestAnalyticsReconcileCmd: the exit codes are the contract cron relies
// on (0 clean, 1 differences or failure, 2 bad input), and each output
// format carries the differences.
func TestAnalyticsReconcileCmd(t *testing.T) {
	conn, addr, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	reconciletest.ReceiptsTable(t, conn, db) // replaced by migration 0002 at merge
	srcDir, dstDir := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	open := func(dir, id string) *simchain.Chain {
		c, err := simchain.Open(dir, simchain.Options{ID: id, BlockInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	src, dst := open(srcDir, "sim-src"), open(dstDir, "sim-dst")
	l := &reconciletest.Ledger{T: t, Conn: conn, DB: db, SrcChain: "sim-src", DstChain: "sim-dst"}
	l.Clean(ctx, src, dst, "orders", 40, 1)
	for _, c := range []*simchain.Chain{src, dst} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	base := []string{"analytics", "reconcile", "--clickhouse", addr, "--database", db}
	chains := []string{"--chain", "sim-src=" + srcDir, "--chain", "sim-dst=" + dstDir}
	args := func(extra ...string) []string {
		return append(append(append([]string{}, base...), chains...), extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"clean", args("--from", "-1h"), 0, []string{"orders", "clean: 1 pipe(s)"}},
		{"clean, RFC 3339 and --pipe", args("--from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--to", "+1h", "--pipe", "orders"), 0, []string{"clean"}},
		{"clean, days", args("--from", "-2d", "--to", "now"), 0, []string{"clean"}},
		{"missing --from", args(), 2, []string{"--from is required"}},
		{"bad time", args("--from", "yesterday"), 2, []string{"--from", "RFC 3339"}},
		{"bad days", args("--from", "-1.5d"), 2, []string{"whole number of days"}},
		{"from after to", args("--from", "-1h", "--to", "-2h"), 2, []string{"is not before"}},
		{"unknown -o", args("--from", "-1h", "-o", "yaml"), 2, []string{"want table, json or csv"}},
		{"missing --chain", append(append([]string{}, base...), "--from", "-1h"), 2, []string{"--chain ID=DIR is required"}},
		{"bad --chain", append(append([]string{}, base...), "--from", "-1h", "--chain", "sim-src"), 2, []string{"want ID=DIR"}},
		{"not a store", append(append([]string{}, base...), "--from", "-1h", "--chain", "sim-src="+t.TempDir()), 2, []string{"not a chain store"}},
		{"a chain of the period not given", append(append([]string{}, base...), "--from", "-1h", "--chain", "sim-src="+srcDir), 2, []string{"sim-dst", "give each with --chain"}},
		{"bad --database", args("--from", "-1h", "--database", "no-such"), 2, []string{"--database"}},
		{"unknown flag", args("--from", "-1h", "--frm", "x"), 2, []string{"unknown flag"}},
		{"ClickHouse unreachable", append([]string{"analytics", "reconcile", "--clickhouse", closed, "--from", "-1h"}, chains...), 1, []string{"unreachable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, nil, tc.args...).must(t, tc.code, tc.want...)
		})
	}

	t.Run("store locked", func(t *testing.T) {
		c := open(dstDir, "sim-dst")
		defer c.Close()
		run(t, nil, args("--from", "-1h")...).must(t, 1, "in use", "stop the relay")
	})

	// A difference: the destination loses a delivery of a confirmed batch.
	c := open(dstDir, "sim-dst")
	if err := c.EraseDelivery(ctx, "orders", 5); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	id := reconciletest.PacketID("orders", 5)
	t.Run("difference, table", func(t *testing.T) {
		run(t, nil, args("--from", "-1h")...).must(t, 1, "confirmed_not_on_chain", "orders", id[:16], "no record", "1 difference(s)")
	})
	t.Run("difference, json", func(t *testing.T) {
		r := run(t, nil, args("--from", "-1h", "-o", "json")...).must(t, 1)
		var rep analytics.Reconciliation
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("json: %v\n%s", err, r.stdout)
		}
		if rep.Found != 1 || len(rep.Differences) != 1 || rep.Differences[0].Kind != analytics.ConfirmedNotOnChain ||
			rep.Differences[0].PacketID != id || rep.Pipes[0].Deliveries != 39 || rep.Pipes[0].Requests != 40 {
			t.Fatalf("json report: %+v", rep)
		}
	})
	t.Run("difference, csv", func(t *testing.T) {
		r := run(t, nil, args("--from", "-1h", "-o", "csv")...).must(t, 1)
		recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
		if err != nil || len(recs) != 2 || recs[0][0] != "kind" || recs[1][0] != "confirmed_not_on_chain" || recs[1][3] != id || recs[1][2] != "5" {
			t.Fatalf("csv: %v %v\n%s", recs, err, r.stdout)
		}
	})
}
