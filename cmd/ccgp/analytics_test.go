package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// TestAnalyticsMigrateCmd runs `ccgp analytics migrate` against the real
// server: first run applies every migration, second is a no-op, a schema
// from the future is refused.
func TestAnalyticsMigrateCmd(t *testing.T) {
	conn, addr, db := chtest.Database(t)
	r := run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db)
	if r.code != 0 || !strings.Contains(r.stdout, "applied 0001_ledger") || !strings.Contains(r.stdout, "applied 0002_receipts") || !strings.Contains(r.stdout, "schema version 2 (was 0)") {
		t.Fatalf("first migrate: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db)
	if r.code != 0 || strings.Contains(r.stdout, "applied") || !strings.Contains(r.stdout, "up to date") {
		t.Fatalf("second migrate: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	chtest.FromTheFuture(t, conn, db)
	r = run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db)
	if r.code != 1 || !strings.Contains(r.stderr, "newer than this binary") || !strings.Contains(r.stderr, "999") {
		t.Fatalf("migrate on a newer schema: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	r = run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", "bad-name")
	if r.code != 2 {
		t.Fatalf("bad --database: code %d, want 2\nstderr: %s", r.code, r.stderr)
	}
}

// TestAnalyticsMigrateUnreachable needs no server: a closed port is
// reported as unreachable, with a hint, exit 1.
func TestAnalyticsMigrateUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	r := run(t, nil, "analytics", "migrate", "--clickhouse", addr)
	if r.code != 1 || !strings.Contains(r.stderr, "unreachable") || !strings.Contains(r.stderr, "native TCP port") {
		t.Fatalf("unreachable server: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("unreachable server took %v to report", d)
	}
}

// TestAnalyticsSinkCmdUsage needs no server: help with examples, missing
// flags (exit 2), an unreachable ClickHouse named in the error (exit 1).
func TestAnalyticsSinkCmdUsage(t *testing.T) {
	run(t, nil, "analytics", "sink", "--help").must(t, 0, "Example", "ccgp analytics sink --kafka", "ccgp.receipts", "native TCP port")
	run(t, nil, "analytics", "sink").must(t, 2, "missing --kafka, --clickhouse, --node")
	run(t, nil, "analytics", "sink", "--kafka", "127.0.0.1:9092", "--node", "127.0.0.1:26657").must(t, 2, "missing --clickhouse")
	run(t, nil, "analytics", "sink", "extra").must(t, 2, "takes 0 argument")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	run(t, nil, "analytics", "sink", "--kafka", "127.0.0.1:9092", "--node", "127.0.0.1:26657", "--clickhouse", addr).
		must(t, 1, "clickhouse "+addr+" unreachable", "native TCP port")
}

// TestAnalyticsSinkCmd runs `ccgp analytics sink` as a process against a
// testnet node, the dev broker and the real ClickHouse: an offence record
// produced to the broker lands in offenders; SIGINT stops it cleanly; a
// schema from the future is refused with exit 1.
func TestAnalyticsSinkCmd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node, a broker and the sink")
	}
	conn, chAddr, db := chtest.Database(t)
	dir := filepath.Join(t.TempDir(), "net")
	env := []string{"CCGP_HOME=" + dir}
	run(t, env, "testnet", "--validators", "1", "--out", dir, "--base-port", "0", "--insecure-dev-keys").must(t, 0)
	var tn struct{ Nodes []struct{ Home, RPC string } }
	b, _ := os.ReadFile(filepath.Join(dir, "testnet.json"))
	if err := json.Unmarshal(b, &tn); err != nil {
		t.Fatal(err)
	}
	startProc(t, nil, "node", "start", "--home", tn.Nodes[0].Home, "--log-level", "error")
	kafka := freeTCP(t)
	startProc(t, nil, "kafka", "dev", "--listen", kafka)
	genesis := filepath.Join(tn.Nodes[0].Home, "config", "genesis.json")
	env = append(env, "CCGP_NODE="+tn.Nodes[0].RPC, "CCGP_GENESIS="+genesis)
	deadline := time.Now().Add(30 * time.Second)
	for run(t, env, "gov", "params").code != 0 {
		if time.Now().After(deadline) {
			t.Fatal("node did not come up")
		}
		time.Sleep(200 * time.Millisecond)
	}

	startProc(t, nil, "analytics", "sink", "--kafka", kafka, "--clickhouse", chAddr, "--node", tn.Nodes[0].RPC,
		"--genesis", genesis, "--database", db, "--group", "cli-test", "--log-level", "warn", "--anomalies-every", "300ms")
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := offence.Encode(offence.Record{TimeUnixMs: 1_764_720_000_000, Reporter: "relay-2", Stage: offence.StageReceiver,
		Reason: "bad_signature", Org: "org-1", Relay: "relay-1", Proven: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: offence.Topic, Key: []byte("org-1"), Value: rec}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for {
		var n uint64
		// The table exists once the sink has migrated; until then the
		// query fails, and is asked again.
		err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".offenders FINAL WHERE proven = 1").Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the offence record never reached ClickHouse: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The anomaly rules run beside it: a forged signature now is an
	// anomaly in the table, listed, and a record in ccgp.anomalies.
	rec, err = offence.Encode(offence.Record{TimeUnixMs: time.Now().UnixMilli(), Reporter: "relay-2", Stage: offence.StageReceiver,
		Reason: "bad_signature", Org: "org-7", Relay: "relay-7", Proven: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: offence.Topic, Key: []byte("org-7"), Value: rec}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(run(t, nil, "analytics", "anomalies", "--clickhouse", chAddr, "--database", db).stdout, "org-7/relay-7") {
		if ctx.Err() != nil {
			t.Fatal("the forged signature never became an anomaly")
		}
		time.Sleep(300 * time.Millisecond)
	}
	run(t, nil, "analytics", "anomalies", "--clickhouse", chAddr, "--database", db, "-o", "json").must(t, 0, `"rule": "forged_or_replayed"`, `"key": "org-7/relay-7"`)
	run(t, nil, "analytics", "anomalies", "--clickhouse", chAddr, "--since", "yesterday").must(t, 2, "neither a duration")
	cons, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics(analytics.AnomalyTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	fs := cons.PollFetches(ctx)
	if err := fs.Err(); err != nil || fs.NumRecords() != 1 || !strings.Contains(string(fs.Records()[0].Value), "org-7/relay-7") {
		t.Fatalf("ccgp.anomalies: %d records (%v), want the one anomaly", fs.NumRecords(), err)
	}

	// The governance follower runs beside the Kafka side: a tx on the
	// chain becomes a governance row.
	run(t, env, "keys", "add", "x-admin", "--insecure-dev-keys").must(t, 0)
	run(t, env, "gov", "org", "apply", "org-x", "--name", "Org X", "--from", "x-admin", "--insecure-dev-keys").must(t, 0, "admit-org org-x")
	for {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".governance FINAL WHERE msg_type = 'apply-org' AND code = 0").Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the apply-org tx never reached the governance table: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A second database, migrated by "a newer binary".
	chtest.FromTheFuture(t, conn, db)
	run(t, nil, "analytics", "sink", "--kafka", kafka, "--clickhouse", chAddr, "--node", tn.Nodes[0].RPC,
		"--genesis", genesis, "--database", db, "--group", "cli-test-2").must(t, 1, "newer than this binary", "999")
}

// TestAnalyticsQueryCmd runs `ccgp analytics query` against the real
// server: the list, one report in each output format (on a ledger where
// one packet was written twice), and its exit codes.
func TestAnalyticsQueryCmd(t *testing.T) {
	conn, addr, db := chtest.Database(t)
	run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db).must(t, 0, "schema version")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ev := uint64(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixMilli())
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".packets (pipe, seq, packet_id, payload_bytes, event_ms, version)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]any{{"pipe-1", uint64(1), "aa", uint32(10), ev, ev}, {"pipe-1", uint64(1), "aa", uint32(10), ev, ev}, {"pipe-1", uint64(2), "bb", uint32(10), ev + 1000, ev + 1000}} {
		if err := b.Append(r...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+db+".receipts (packet_id, status, reason, receipted_ms, version)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append("bb", "REJECTED", "no such contract", ev+1500, ev+1500); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"--list"}, {}} {
		r := run(t, nil, append([]string{"analytics", "query"}, args...)...).must(t, 0, "packet-history  --packet (required)", "pipe-daily  --pipe --since --until", "top-offenders  --org --since --until --limit")
		if n := strings.Count(r.stdout, "\n  "); n < 10 {
			t.Fatalf("--list shows %d reports, want at least 10:\n%s", n, r.stdout)
		}
	}
	run(t, nil, "analytics", "query", "--help").must(t, 0, "Example", "ccgp analytics query pipe-daily --pipe pipe-1 --since -7d", "-o csv", "RFC 3339")

	q := []string{"analytics", "query", "pipe-daily", "--clickhouse", addr, "--database", db, "--pipe", "pipe-1", "--since", "2026-12-01T00:00:00Z"}
	r := run(t, nil, q...).must(t, 0)
	wantTable := "DAY         PIPE    PACKETS  RECEIPTED  DELIVERED  FAILED  FAILURE_RATE\n2026-12-01  pipe-1  2        1          0          1       1\n"
	if r.stdout != wantTable {
		t.Fatalf("table:\n%q\nwant\n%q", r.stdout, wantTable)
	}
	r = run(t, nil, append(q, "-o", "csv")...).must(t, 0)
	if want := "day,pipe,packets,receipted,delivered,failed,failure_rate\n2026-12-01,pipe-1,2,1,0,1,1\n"; r.stdout != want {
		t.Fatalf("csv:\n%q\nwant\n%q", r.stdout, want)
	}
	r = run(t, nil, append(q, "-o", "json")...).must(t, 0)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if len(rows) != 1 || rows[0]["day"] != "2026-12-01" || rows[0]["packets"] != float64(2) || rows[0]["failure_rate"] != float64(1) ||
		!strings.HasPrefix(r.stdout, "[\n  {\"day\": \"2026-12-01\", \"pipe\": \"pipe-1\", \"packets\": 2,") {
		t.Fatalf("json: %s", r.stdout)
	}
	run(t, nil, "analytics", "query", "refusals-by-reason", "--clickhouse", addr, "--database", db).must(t, 0, "REJECTED", "no such contract")
	r = run(t, nil, "analytics", "query", "pipe-daily", "--clickhouse", addr, "--database", db, "--pipe", "nope").must(t, 0)
	if r.stdout != "DAY  PIPE  PACKETS  RECEIPTED  DELIVERED  FAILED  FAILURE_RATE\n" {
		t.Fatalf("no rows: %q", r.stdout)
	}

	// Bad usage is exit 2 with the list, before any connection.
	run(t, nil, "analytics", "query", "no-such-report").must(t, 2, `unknown report: "no-such-report"`, "pipe-daily  --pipe")
	run(t, nil, "analytics", "query", "pipe-daily", "--org", "orgA").must(t, 2, "does not take --org", "pipe-daily  --pipe")
	run(t, nil, "analytics", "query", "pipe-daily", "--since", "yesterday").must(t, 2, "--since", "-24h")
	run(t, nil, "analytics", "query", "packet-history").must(t, 2, "needs --packet")
	run(t, nil, "analytics", "query", "pipe-daily", "-o", "xml").must(t, 2, "table, json or csv")
	run(t, nil, "analytics", "query", "pipe-daily", "extra").must(t, 2, "one report name")
	run(t, nil, "analytics", "query", "pipe-daily", "--clickhouse", addr, "--database", "bad-name").must(t, 2, "--database")

	// A database with no ledger is exit 1, with the way to make one.
	run(t, nil, "analytics", "query", "open-manual", "--clickhouse", addr, "--database", db+"_none").must(t, 1, db+"_none", "ccgp analytics migrate")

	// An unreachable server is exit 1, named.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	run(t, nil, "analytics", "query", "pipe-daily", "--clickhouse", dead).must(t, 1, dead, "unreachable")
}
