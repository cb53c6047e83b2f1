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
