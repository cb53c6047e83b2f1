package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

// TestAnalyticsCreditCmdUsage needs no server: help with examples, bad
// flags (exit 2), an unreachable ClickHouse (exit 1).
func TestAnalyticsCreditCmdUsage(t *testing.T) {
	run(t, nil, "analytics", "credit", "--help").must(t, 0, "Example", "--report --from auditor-1", "credit_restrict", "native TCP port")
	run(t, nil, "analytics", "credit", "--window", "0s").must(t, 2, "--window")
	run(t, nil, "analytics", "credit", "--window", "800h").must(t, 2, "31 days")
	run(t, nil, "analytics", "credit", "-o", "yaml").must(t, 2, "unknown output format")
	run(t, nil, "analytics", "credit", "--report").must(t, 2, "--report needs --from")
	run(t, nil, "analytics", "credit", "extra").must(t, 2, "takes 0 argument")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	run(t, nil, "analytics", "credit", "--clickhouse", addr).must(t, 1, "unreachable", "native TCP port")
}

// TestAnalyticsCreditCmd: a ledger with proven offences of relay-1 (a
// relay of the node's org) and claimed ones of a relay nobody registered;
// the command shows both with their reasons (table and json) and, with
// --report, an auditor's reports commit for the registered party and are
// refused for the unregistered one (exit 1).
func TestAnalyticsCreditCmd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	conn, addr, db := chtest.Database(t)
	run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db).must(t, 0, "applied 0001_ledger")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".offenders (time_ms, reporter, stage, reason, org, relay, pipe, seq, packet_id, detail, proven, evidence, version)")
	if err != nil {
		t.Fatal(err)
	}
	at := uint64(time.Now().Add(-10 * time.Minute).UnixMilli())
	for i, o := range []struct {
		org, relay, reason string
		proven             uint8
	}{
		{"org-1", "relay-1", "bad_signature", 1},
		{"org-zz", "relay-zz", "sequence_gap", 0},
	} {
		if err := b.Append(at+uint64(i), "relay-9", "receiver", o.reason, o.org, o.relay, "p1", uint64(i+1), "", "", o.proven, "", at); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	ch := []string{"--clickhouse", addr, "--database", db}
	out := run(t, nil, append([]string{"analytics", "credit", "--window", "1h"}, ch...)...).
		must(t, 0, "relay-1", "500", "1 proven offences (bad_signature)", "relay-zz", "1 claimed offences (sequence_gap)")
	if !strings.Contains(out.stdout, "SCORE") {
		t.Fatalf("table: %s", out.stdout)
	}
	out = run(t, nil, append([]string{"analytics", "credit", "--party", "relay:relay-1", "-o", "json"}, ch...)...).must(t, 0)
	var scores []struct {
		Kind     string `json:"kind"`
		Party    string `json:"party"`
		Score    uint32 `json:"score_1000"`
		Digest   string `json:"evidence_digest"`
		Proven   uint64 `json:"proven_offences"`
		Claimed  uint64 `json:"claimed_offences"`
		Reasons  []string
		Offences float64 `json:"offences"`
	}
	if err := json.Unmarshal([]byte(out.stdout), &scores); err != nil || len(scores) != 1 {
		t.Fatalf("json: %v %s", err, out.stdout)
	}
	if s := scores[0]; s.Kind != "relay" || s.Party != "relay-1" || s.Score != 500 || s.Proven != 1 || len(s.Digest) != 64 || s.Offences != 0.5 {
		t.Fatalf("relay-1: %+v", s)
	}
	run(t, nil, append([]string{"analytics", "credit", "--party", "nobody"}, ch...)...).must(t, 0, "no packets or offences of nobody")

	// A node, an auditor and relay-1's service, through the CLI.
	dir := filepath.Join(t.TempDir(), "net")
	env := []string{"CCGP_HOME=" + dir}
	dev := "--insecure-dev-keys"
	run(t, env, "testnet", "--validators", "1", "--genesis-orgs", "1", "--out", dir, "--base-port", "0", "--block-interval", "100ms", dev).must(t, 0)
	var tn struct{ Nodes []struct{ Home, RPC string } }
	raw, err := os.ReadFile(filepath.Join(dir, "testnet.json"))
	if err != nil || json.Unmarshal(raw, &tn) != nil || len(tn.Nodes) != 1 {
		t.Fatalf("testnet.json: %v %s", err, raw)
	}
	node := exec.Command(ccgpBin, "node", "start", "--home", tn.Nodes[0].Home, "--log-level", "error")
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { node.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			node.Process.Kill()
		}
	})
	env = append(env, "CCGP_NODE="+tn.Nodes[0].RPC, "CCGP_GENESIS="+filepath.Join(tn.Nodes[0].Home, "config", "genesis.json"))
	deadline := time.Now().Add(30 * time.Second)
	for run(t, env, "gov", "params").code != 0 {
		if time.Now().After(deadline) {
			t.Fatal("node did not come up")
		}
		time.Sleep(200 * time.Millisecond)
	}
	run(t, env, "gov", "params").must(t, 0, "CREDIT RESTRICT", "600")
	run(t, env, "keys", "add", "relay-1", dev).must(t, 0)
	run(t, env, "gov", "account", "propose", "--role", "cross-chain", "--key", "relay-1", "--from", "gov-org-1", dev).must(t, 0, "proposal 1 opened")
	run(t, env, "gov", "vote", "1", "yes", "--from", "gov-org-1", dev).must(t, 0, "passed")
	run(t, env, "gov", "service", "register", "relay-1", "--address", "127.0.0.1:7001", "--tls-fingerprint", strings.Repeat("ab", 32),
		"--account", "relay-1", "--from", "gov-org-1", dev).must(t, 0, "committed")
	run(t, env, "keys", "add", "auditor-1", dev).must(t, 0)
	run(t, env, "gov", "account", "propose", "--role", "auditor", "--key", "auditor-1", "--from", "gov-org-1", dev).must(t, 0, "proposal 2 opened")
	run(t, env, "gov", "vote", "2", "yes", "--from", "gov-org-1", dev).must(t, 0, "passed")

	run(t, env, append([]string{"analytics", "credit", "--party", "relay-1", "--report", "--from", "auditor-1", dev}, ch...)...).
		must(t, 0, "reported relay relay-1: 500", "counted 500 over 1 auditor orgs, restricted true")
	// relay-zz is on no chain: its report is refused, the others commit.
	run(t, env, append([]string{"analytics", "credit", "--report", "--from", "auditor-1", dev}, ch...)...).
		must(t, 1, "report relay relay-zz refused", "not registered", "reported relay relay-1: 500", "reports refused")
	run(t, env, append([]string{"analytics", "credit", "--report", "--from", "gov-org-1", "--party", "relay-1", dev}, ch...)...).
		must(t, 1, "refused", "role governor")
}
