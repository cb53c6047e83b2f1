// Package analytics keeps the platform's ledger in ClickHouse, for
// analysts, reconciliation, anomaly warnings and credit scores.
//
// This file set is its foundation: Connect opens a native-protocol
// connection (the only protocol Debian's ClickHouse 18.16 and
// clickhouse-go v2.26.0 share), and Migrate brings a database's schema to
// the version this binary knows, from SQL files embedded under
// migrations/. docs/analytics.md documents every table and column.
//
// Every table is a ReplacingMergeTree keyed by the record's natural id, so
// a record written twice is one row; every query this package ships reads
// deduplicated rows (FINAL or argMax), as PacketStatus shows.
//
// Reconcile compares the ledger with the source and destination chains
// (subchain.Records) for a period and names every packet on which they
// disagree; its ClickHouse reads are all in reconcile_ledger.go.
package analytics
