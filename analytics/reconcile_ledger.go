package analytics

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// chLedger is every ClickHouse read of Reconcile, in this one file so
// that a schema change (the receipts table of migration 0002) is adapted
// in one place. Each read uses FINAL (ReplacingMergeTree: one row per key,
// the latest version) and streams: rows come in sequence order and are
// decoded as they arrive, never collected.
type chLedger struct {
	conn driver.Conn
	db   string // checked by Reconcile: a plain identifier
}

var _ ledger = chLedger{}

// pipes lists the pipes with packets whose event time is in [from, to),
// each with its chains and the range of those packets' sequences. The
// condition on event_time (the partition key) lets ClickHouse skip the
// months outside the period; the one on event_ms is the exact bound.
func (l chLedger) pipes(ctx context.Context, from, to time.Time, pipe string) ([]PipeCounts, error) {
	q := "SELECT pipe, any(src_chain), any(dst_chain), min(seq), max(seq), count() FROM `" + l.db + "`.packets FINAL" +
		" WHERE event_time >= toDateTime(?) AND event_time <= toDateTime(?) AND event_ms >= ? AND event_ms < ?"
	args := []any{uint64(from.Unix()), uint64(to.Unix()), uint64(from.UnixMilli()), uint64(to.UnixMilli())}
	if pipe != "" {
		q += " AND pipe = ?"
		args = append(args, pipe)
	}
	rows, err := l.conn.Query(ctx, q+" GROUP BY pipe ORDER BY pipe", args...)
	if err != nil {
		return nil, fmt.Errorf("analytics: pipes of the period: %w", err)
	}
	defer rows.Close()
	var out []PipeCounts
	for rows.Next() {
		var p PipeCounts
		if err := rows.Scan(&p.Pipe, &p.SourceChain, &p.DestChain, &p.FirstSeq, &p.LastSeq, &p.Packets); err != nil {
			return nil, fmt.Errorf("analytics: pipes of the period: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: pipes of the period: %w", err)
	}
	return out, nil
}

// packets streams the pipe's packet rows over [first, last] with their
// receipt (receipts, keyed by packet id) and their batch's anchor
// (anchors, keyed by sending relay, receiving relay and batch). Both
// joins are hash joins whose right side ClickHouse builds in memory, so
// each right side is cut to the keys of this range first: its size
// follows the period, not the table.
func (l chLedger) packets(ctx context.Context, pipe string, first, last uint64) iter.Seq2[ledgerPacket, error] {
	db := "`" + l.db + "`"
	inRange := " FROM " + db + ".packets WHERE pipe = ? AND seq >= ? AND seq <= ?"
	q := `SELECT seq, packet_id, r_status, r_dest_tx, a_open, a_confirm FROM (
	SELECT seq, packet_id, src_relay, dst_relay, batch_seq, r_status, r_dest_tx FROM (
		SELECT seq, packet_id, src_relay, dst_relay, batch_seq FROM ` + db + `.packets FINAL WHERE pipe = ? AND seq >= ? AND seq <= ?
	) ANY LEFT JOIN (
		SELECT packet_id, status AS r_status, dest_tx AS r_dest_tx FROM ` + db + `.receipts FINAL
		WHERE packet_id IN (SELECT packet_id` + inRange + `)
	) USING packet_id
) ANY LEFT JOIN (
	SELECT from_relay AS src_relay, to_relay AS dst_relay, batch_seq, open_height AS a_open, confirm_height AS a_confirm FROM ` + db + `.anchors FINAL
	WHERE (from_relay, to_relay, batch_seq) IN (SELECT src_relay, dst_relay, batch_seq` + inRange + `)
) USING (src_relay, dst_relay, batch_seq)
ORDER BY seq`
	return func(yield func(ledgerPacket, error) bool) {
		rows, err := l.conn.Query(ctx, q, pipe, first, last, pipe, first, last, pipe, first, last)
		if err != nil {
			yield(ledgerPacket{}, fmt.Errorf("analytics: packets of %s: %w", pipe, err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r ledgerPacket
			var open, confirm uint64
			if err := rows.Scan(&r.seq, &r.packetID, &r.receipt, &r.destTx, &open, &confirm); err != nil {
				yield(ledgerPacket{}, fmt.Errorf("analytics: packets of %s: %w", pipe, err))
				return
			}
			r.anchored, r.confirmed = open > 0, confirm > 0
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(ledgerPacket{}, fmt.Errorf("analytics: packets of %s: %w", pipe, err))
		}
	}
}

// exceptions streams the pipe's exception records over [first, last]:
// their latest state.
func (l chLedger) exceptions(ctx context.Context, pipe string, first, last uint64) iter.Seq2[ledgerException, error] {
	q := "SELECT seq, state FROM `" + l.db + "`.exceptions FINAL WHERE pipe = ? AND seq >= ? AND seq <= ? ORDER BY seq"
	return func(yield func(ledgerException, error) bool) {
		rows, err := l.conn.Query(ctx, q, pipe, first, last)
		if err != nil {
			yield(ledgerException{}, fmt.Errorf("analytics: exceptions of %s: %w", pipe, err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r ledgerException
			if err := rows.Scan(&r.seq, &r.state); err != nil {
				yield(ledgerException{}, fmt.Errorf("analytics: exceptions of %s: %w", pipe, err))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(ledgerException{}, fmt.Errorf("analytics: exceptions of %s: %w", pipe, err))
		}
	}
}
