// Package analytics keeps the platform's ledger in ClickHouse, for
// analysts, reconciliation, anomaly warnings and credit scores.
//
// This file set is its foundation: Connect opens a native-protocol
// connection (the only protocol Debian's ClickHouse 18.16 and
// clickhouse-go v2.26.0 share), and Migrate brings a database's schema to
// the version this binary knows, from SQL files embedded under
// migrations/. docs/analytics.md documents every table and column.
//
// Sink fills the ledger from the mesh's Kafka topics (packets, receipts
// and their batches, offence records), in batches, committing its
// consumer group's offsets only after ClickHouse acknowledged the rows.
//
// GovFollower fills the governance, anchors and exceptions tables from the
// governance chain's blocks (docs/analytics.md, "The governance
// follower").
//
// Reports is the registry of named reports (`ccgp analytics query NAME`):
// SQL that runs on 18.16 and current servers, parameters bound by the
// driver, and RunReport to run one (docs/analytics.md, "Reports").
//
// Every table is a ReplacingMergeTree keyed by the record's natural id, so
// a record written twice is one row; every query this package ships reads
// deduplicated rows (FINAL or argMax), as PacketStatus shows.
package analytics
