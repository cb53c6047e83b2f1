package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

// TestDemoAnalytics runs `ccgp demo --json --clickhouse` against a real
// server and checks the analytics block against the demo's own figures:
// every packet sent is in the ledger with a DELIVERED receipt, and the
// governance chain's txs are there, the refusals the demo shows among
// them. Then it reads the database itself, with FINAL, so that the block
// is checked against ClickHouse and not only against its own reading.
func TestDemoAnalytics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole platform")
	}
	conn, addr, db := chtest.Database(t)
	r := run(t, nil, "demo", "--json", "--duration", "2s", "--rate", "300", "--payload", "64",
		"--clickhouse", addr, "--database", db).must(t, 0, "analytics: sink and governance follower writing to ClickHouse")
	var sum struct {
		Sent        int `json:"packets_sent"`
		Delivered   int `json:"packets_delivered"`
		Receipts    int `json:"receipts"`
		RejectedTxs int `json:"governance_rejections_shown"`
		Analytics   *struct {
			Database          string            `json:"database"`
			Rows              map[string]uint64 `json:"rows"`
			CaughtUp          bool              `json:"caught_up"`
			PacketsSent       int               `json:"packets_sent"`
			PacketsInLedger   uint64            `json:"packets_in_ledger"`
			ReceiptsDelivered uint64            `json:"receipts_delivered"`
			GovernanceTxs     uint64            `json:"governance_txs"`
			GovernanceRefused uint64            `json:"governance_refused"`
			SinkRows          uint64            `json:"sink_rows"`
			SinkRowsPerS      float64           `json:"sink_rows_per_s"`
		} `json:"analytics"`
		Skipped string `json:"analytics_skipped"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("stdout is not one JSON summary: %v\n%s", err, r.stdout)
	}
	a := sum.Analytics
	switch {
	case a == nil || sum.Skipped != "":
		t.Fatalf("no analytics block (skipped: %q)\n%s", sum.Skipped, r.stdout)
	case sum.Sent == 0 || sum.Delivered != sum.Sent || sum.Receipts < sum.Sent:
		t.Fatalf("the demo itself: %d sent, %d delivered, %d receipts", sum.Sent, sum.Delivered, sum.Receipts)
	case !a.CaughtUp || a.Database != db:
		t.Fatalf("ledger not caught up, or another database: %+v", a)
	case a.PacketsSent != sum.Sent || a.PacketsInLedger != uint64(sum.Sent) || a.Rows["packets"] != uint64(sum.Sent):
		t.Fatalf("ledger packets %d (rows %d), demo sent %d", a.PacketsInLedger, a.Rows["packets"], sum.Sent)
	case a.ReceiptsDelivered != uint64(sum.Sent) || a.Rows["receipts"] != uint64(sum.Sent):
		t.Fatalf("ledger: %d DELIVERED receipts of %d rows, demo delivered and receipted %d", a.ReceiptsDelivered, a.Rows["receipts"], sum.Sent)
	case a.GovernanceTxs == 0 || a.GovernanceRefused < uint64(sum.RejectedTxs):
		t.Fatalf("ledger: %d governance txs, %d refused; the demo showed %d refusals", a.GovernanceTxs, a.GovernanceRefused, sum.RejectedTxs)
	case a.SinkRows < 2*uint64(sum.Sent) || a.SinkRowsPerS <= 0:
		t.Fatalf("sink wrote %d rows (%.0f/s) for %d packets and their receipts", a.SinkRows, a.SinkRowsPerS, sum.Sent)
	}
	// ClickHouse's own word.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var packets, delivered, refused uint64
	q := "`" + db + "`."
	for _, c := range []struct {
		dst  *uint64
		stmt string
	}{
		{&packets, "SELECT count() FROM " + q + "packets FINAL"},
		{&delivered, "SELECT count() FROM " + q + "packets FINAL WHERE packet_id IN (SELECT packet_id FROM " + q + "receipts FINAL WHERE status = 'DELIVERED')"},
		{&refused, "SELECT countIf(code != 0) FROM " + q + "governance FINAL"},
	} {
		if err := conn.QueryRow(ctx, c.stmt).Scan(c.dst); err != nil {
			t.Fatalf("%s: %v", c.stmt, err)
		}
	}
	if packets != uint64(sum.Sent) || delivered != uint64(sum.Sent) || refused != a.GovernanceRefused {
		t.Fatalf("ClickHouse holds %d packets, %d with a DELIVERED receipt, %d refused txs; the demo: %d sent, %d refused",
			packets, delivered, refused, sum.Sent, a.GovernanceRefused)
	}
	t.Logf("ledger: %+v", *a)
}

// TestDemoNoAnalytics: without a server (or with --no-analytics) the demo
// runs as before, its JSON has no analytics block, and one line says
// analytics was skipped and how to get a server.
func TestDemoNoAnalytics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole platform")
	}
	r := run(t, nil, "demo", "--json", "--no-analytics", "--duration", "1s", "--rate", "200", "--payload", "64").
		must(t, 0, "analytics skipped", ".ci/clickhouse start")
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("stdout is not one JSON summary: %v\n%s", err, r.stdout)
	}
	if _, ok := m["analytics"]; ok {
		t.Fatalf("an analytics block without a server: %s", m["analytics"])
	}
	if _, ok := m["analytics_skipped"]; !ok || strings.Count(r.stderr, "analytics skipped") != 1 {
		t.Fatalf("the skip is not said once:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
}

// TestDemoAnalyticsUsage: contradictory or malformed analytics flags are
// bad usage (exit 2), an unreachable server a failure (exit 1), before
// anything starts.
func TestDemoAnalyticsUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-analytics", "--clickhouse", "127.0.0.1:9000"}, "contradict"},
		{[]string{"--database", "x"}, "--database needs --clickhouse"},
		{[]string{"--clickhouse", "127.0.0.1:9000", "--database", "ccgp-demo"}, "letters, digits and _"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			run(t, nil, append([]string{"demo"}, c.args...)...).must(t, 2, c.want)
		})
	}
	// A server that is not there is a failure, said before anything starts.
	run(t, nil, "demo", "--clickhouse", "127.0.0.1:1").must(t, 1, "127.0.0.1:1 unreachable", "--no-analytics")
}
