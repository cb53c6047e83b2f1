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
	conn   driver.Conn
	db     string // checked by Reconcile: a plain identifier
	window uint64 // sequences per packets query; 0: packetWindow
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
// (anchors, keyed by sending relay, receiving relay and batch).
//
// Both joins are hash joins whose right side ClickHouse builds in memory:
// they join on 64-bit hashes of the keys (a hash table of UInt64 is
// several times faster than one of 64-character strings; a collision
// among a period's packets is about 1 in 10^11), and the receipts are
// cut to the batches of the range, so the right side follows the period,
// not the table. Every window scans the whole receipts table (its key is
// the packet id, a hash: no range of it is a window), so windows are
// large: ClickHouse's memory for a window follows its size, and 10M
// packets are one window (measured on 10M receipts in 10 parts: a FINAL
// scan costs 5-7 s, a quarter of the whole query; argMax grouped by the
// hash was no faster). That cut assumes a receipt row carries the batch_seq of
// the packets row it answers (the source relay's batch): check it against
// migration 0002 and the sink at merge. The receipt's dest_tx travels as a flag: the hex of
// every one would double the bytes sent; destTxs fetches it for the
// differences.
func (l chLedger) packets(ctx context.Context, pipe string, first, last uint64) iter.Seq2[ledgerPacket, error] {
	db := "`" + l.db + "`"
	// A packet's batch is known from its receipt (the sink's packets rows
	// are the requests, written before any batch): the receipt names the
	// destination relay that signed it (from_relay), the source relay
	// (to_relay) and the batch, which is the anchor's key as the source
	// opened it. A packet with no receipt yet has no anchor here.
	q := `SELECT seq, r_status, r_has_tx, a_open > 0, a_confirm > 0 FROM (
	SELECT seq, r_status, r_has_tx, cityHash64(r_src, r_dst, r_batch) AS ak FROM (
		SELECT seq, cityHash64(packet_id) AS rk FROM ` + db + `.packets FINAL WHERE pipe = ? AND seq >= ? AND seq <= ?
	) ANY LEFT JOIN (
		SELECT cityHash64(packet_id) AS rk, status AS r_status, dest_tx != '' AS r_has_tx,
			to_relay AS r_src, from_relay AS r_dst, batch_seq AS r_batch FROM ` + db + `.receipts FINAL
	) USING rk
) ANY LEFT JOIN (
	SELECT cityHash64(from_relay, to_relay, batch_seq) AS ak, open_height AS a_open, confirm_height AS a_confirm FROM ` + db + `.anchors FINAL
) USING ak
ORDER BY seq`
	type opened struct {
		rows driver.Rows
		err  error
	}
	// open starts the query of one window in the background: ClickHouse
	// joins and sorts the next window while this one is read.
	open := func(lo, hi uint64) <-chan opened {
		ch := make(chan opened, 1)
		go func() {
			rows, err := l.conn.Query(ctx, q, pipe, lo, hi)
			ch <- opened{rows, err}
		}()
		return ch
	}
	return func(yield func(ledgerPacket, error) bool) {
		fail := func(err error) { yield(ledgerPacket{}, fmt.Errorf("analytics: packets of %s: %w", pipe, err)) }
		var pending []<-chan opened
		// Every window opened is closed, read to the end or not.
		defer func() {
			for _, ch := range pending {
				if o := <-ch; o.err == nil {
					o.rows.Close()
				}
			}
		}()
		window := l.window
		if window == 0 {
			window = packetWindow
		}
		lo, done := first, first > last
		ahead := func() { // opens the next window of [first, last], if any
			if done {
				return
			}
			hi := last
			if last-lo >= window {
				hi = lo + window - 1
			}
			pending = append(pending, open(lo, hi))
			lo, done = hi+1, hi == last
		}
		ahead()
		for len(pending) > 0 {
			ahead()
			o := <-pending[0]
			pending = pending[1:]
			if o.err != nil {
				fail(o.err)
				return
			}
			more, err := readPackets(o.rows, yield)
			o.rows.Close()
			if err != nil {
				fail(err)
				return
			}
			if !more {
				return
			}
		}
	}
}

// packetWindow is the sequences one ledger query covers: it bounds the
// hash tables and the sort that ClickHouse holds for a query.
// 2^24: a window's hash tables stay near a GB (a UInt64 key, a short
// status, three flags a row), and the receipts table is scanned once for
// 10M packets.
const packetWindow = 1 << 24

// readPackets yields the rows of one window; false: the consumer stopped.
func readPackets(rows driver.Rows, yield func(ledgerPacket, error) bool) (bool, error) {
	for rows.Next() {
		var r ledgerPacket
		var hasTx, anchored, confirmed uint8
		if err := rows.Scan(&r.seq, &r.receipt, &hasTx, &anchored, &confirmed); err != nil {
			return false, err
		}
		r.hasDestTx, r.anchored, r.confirmed = hasTx != 0, anchored != 0, confirmed != 0
		if !yield(r, nil) {
			return false, nil
		}
	}
	return true, rows.Err()
}

// destTxs returns the receipts' dest_tx of these packets, in one query.
func (l chLedger) destTxs(ctx context.Context, packetIDs []string) (map[string]string, error) {
	out := make(map[string]string, len(packetIDs))
	if len(packetIDs) == 0 {
		return out, nil
	}
	rows, err := l.conn.Query(ctx, "SELECT packet_id, dest_tx FROM `"+l.db+"`.receipts FINAL WHERE packet_id IN (SELECT arrayJoin(?))", packetIDs)
	if err != nil {
		return nil, fmt.Errorf("analytics: receipts' dest tx: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, tx string
		if err := rows.Scan(&id, &tx); err != nil {
			return nil, fmt.Errorf("analytics: receipts' dest tx: %w", err)
		}
		out[id] = tx
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: receipts' dest tx: %w", err)
	}
	return out, nil
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
