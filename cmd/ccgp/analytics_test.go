package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

// TestAnalyticsMigrateCmd runs `ccgp analytics migrate` against the real
// server: first run applies every migration, second is a no-op, a schema
// from the future is refused.
func TestAnalyticsMigrateCmd(t *testing.T) {
	conn, addr, db := chtest.Database(t)
	r := run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db)
	if r.code != 0 || !strings.Contains(r.stdout, "applied 0001_ledger") || !strings.Contains(r.stdout, "schema version 1 (was 0)") {
		t.Fatalf("first migrate: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, "analytics", "migrate", "--clickhouse", addr, "--database", db)
	if r.code != 0 || strings.Contains(r.stdout, "applied") || !strings.Contains(r.stdout, "up to date") {
		t.Fatalf("second migrate: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(uint32(999), "from_the_future", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
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
