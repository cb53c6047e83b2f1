// Package chtest gives tests a real ClickHouse server: the one named by
// $CCGP_CLICKHOUSE (host:port of its native TCP port), which `make test`
// starts with .ci/clickhouse, and a fresh database per test, dropped when
// the test ends.
//
// With no server named, a test skips with a message saying how to get one,
// except under CI=true, where it fails: CI must never pass by skipping the
// ClickHouse tests.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// EnvAddr is the variable naming the server.
const EnvAddr = "CCGP_CLICKHOUSE"

const howTo = "no ClickHouse server: set " + EnvAddr + "=127.0.0.1:PORT, e.g. " +
	"`apt-get install -y clickhouse-server clickhouse-client; " + EnvAddr + "=$(.ci/clickhouse start /tmp/ch)`, " +
	"or run `make test`, which starts one"

// Addr returns the server's native address, or skips t (fails it under
// CI=true) when none is named.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(howTo + " (CI=true: the ClickHouse tests must run)")
		}
		t.Skip(howTo)
	}
	return addr
}

// Database connects to the server and creates a database with a random
// name for this test; t.Cleanup drops it and closes the connection. A
// named server that does not answer fails the test: it was asked for.
func Database(t testing.TB) (conn driver.Conn, addr, db string) {
	t.Helper()
	addr = Addr(t)
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("chtest: open %s: %v", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		t.Fatalf("chtest: %s=%s does not answer: %v", EnvAddr, addr, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	db = "ccgp_test_" + hex.EncodeToString(b[:])
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		conn.Close()
		t.Fatalf("chtest: create database %s: %v", db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Errorf("chtest: drop database %s: %v", db, err)
		}
		conn.Close()
	})
	return conn, addr, db
}

// FromTheFuture records schema version 999 in db's schema_migrations, as
// a newer binary would have: what Migrate and the sink must refuse. The
// row goes through a batch: an INSERT through Exec does not complete on
// 18.16.
func FromTheFuture(t testing.TB, conn driver.Conn, db string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err == nil {
		if err = b.Append(uint32(999), "from_the_future", time.Now()); err == nil {
			err = b.Send()
		}
	}
	if err != nil {
		t.Fatalf("chtest: record version 999 in %s: %v", db, err)
	}
}
