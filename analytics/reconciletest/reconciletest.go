// Package reconciletest builds, for tests and benchmarks of reconciliation,
// a clean history on real parts: requests on a source simchain, their
// deliveries on a destination simchain, and the ledger rows in ClickHouse
// that the sink would have written for them (inserted directly, with
// PrepareBatch).
package reconciletest

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// SrcRelay sends every pipe's batches; DstRelay(pipe) receives them, one
// relay per pipe so that pipes' batch numbers (anchors' keys) never meet.
const SrcRelay = "relay-a"

// DstRelay is the receiving relay of pipe's batches.
func DstRelay(pipe string) string { return "relay-b-" + pipe }

// BatchSize is the packets per batch of a history: batch_seq of packet
// seq is (seq-1)/BatchSize + 1.
const BatchSize = 100

// ReceiptsTable creates the receipts table that the sink's migration 0002
// adds, with its columns, so that these tests need not wait for it.
//
// replaced by migration 0002 at merge
func ReceiptsTable(t testing.TB, conn driver.Conn, db string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// replaced by migration 0002 at merge
	err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS `"+db+"`.receipts ("+
		"packet_id String, from_relay String, to_relay String, batch_seq UInt64, status String, "+
		"dest_tx String, dest_height UInt64, reason String, receipted_ms UInt64, version UInt64"+
		") ENGINE = ReplacingMergeTree(version) ORDER BY packet_id")
	if err != nil {
		t.Fatalf("reconciletest: create receipts: %v", err)
	}
}

// Packets returns packets (pipe, from..to) ready for Submit and Deliver.
// Only the first is really signed: the chains check structure, not
// signatures, and signing millions would dominate a benchmark.
func Packets(t testing.TB, pipe string, from, to uint64, payload string) []*amdp.Packet {
	t.Helper()
	tmpl := &amdp.Packet{
		PipeId:        pipe,
		Sequence:      from,
		Operation:     amdp.OpWrite,
		Payload:       []byte(payload),
		TimeoutUnixMs: uint64(time.Now().Add(time.Hour).UnixMilli()),
	}
	if err := amdp.SignPacket(tmpl, crypto.DevSigner("app")); err != nil {
		t.Fatal(err)
	}
	return copies(tmpl, from, to)
}

// copies returns packets (tmpl's pipe, from..to) carrying tmpl's fields.
func copies(tmpl *amdp.Packet, from, to uint64) []*amdp.Packet {
	pipe := tmpl.PipeId
	out := make([]*amdp.Packet, 0, to-from+1)
	for s := from; s <= to; s++ {
		p := &amdp.Packet{PipeId: pipe, Sequence: s, Operation: tmpl.Operation, Payload: tmpl.Payload,
			TimeoutUnixMs: tmpl.TimeoutUnixMs, Credential: tmpl.Credential, Signature: tmpl.Signature}
		out = append(out, p)
	}
	return out
}

// Submit submits the packets on the source chain (Submit waits for room
// in the mempool).
func Submit(ctx context.Context, t testing.TB, src *simchain.Chain, ps []*amdp.Packet) {
	t.Helper()
	for _, p := range ps {
		if _, err := src.Submit(ctx, p); err != nil {
			t.Fatalf("reconciletest: submit %s/%d: %v", p.GetPipeId(), p.GetSequence(), err)
		}
	}
}

// Deliver delivers the packets on the destination chain and returns the
// outcomes, in order.
func Deliver(ctx context.Context, t testing.TB, dst *simchain.Chain, ps []*amdp.Packet) []Outcome {
	t.Helper()
	out := make([]Outcome, 0, len(ps))
	const chunk = 5000
	for i := 0; i < len(ps); i += chunk {
		part := ps[i:min(i+chunk, len(ps))]
		ds, err := dst.Deliver(ctx, part)
		if err != nil {
			t.Fatalf("reconciletest: deliver: %v", err)
		}
		for j, d := range ds {
			out = append(out, Outcome{Pipe: part[j].GetPipeId(), Seq: part[j].GetSequence(), Status: d.Status, Tx: hex.EncodeToString(d.TxHash), Height: d.Height})
		}
	}
	return out
}

// Outcome is one delivery's result as the ledger records it.
type Outcome struct {
	Pipe   string
	Seq    uint64
	Status amdp.ReceiptStatus
	Tx     string
	Height uint64
}

// Ledger writes the sink's rows into one database.
type Ledger struct {
	T        testing.TB
	Conn     driver.Conn
	DB       string
	SrcChain string
	DstChain string
	EventMs  uint64 // event time of the packets; default now
}

// PacketID is the ledger's packet id: hex of amdp.PacketID.
func PacketID(pipe string, seq uint64) string {
	id := amdp.PacketID(pipe, seq)
	return hex.EncodeToString(id[:])
}

func (l *Ledger) insert(table, cols string, n int, row func(i int) []any) {
	l.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const chunk = 500000
	for start := 0; start < n; start += chunk {
		b, err := l.Conn.PrepareBatch(ctx, "INSERT INTO `"+l.DB+"`."+table+" ("+cols+")")
		if err != nil {
			l.T.Fatalf("reconciletest: insert %s: %v", table, err)
		}
		for i := start; i < min(start+chunk, n); i++ {
			if err := b.Append(row(i)...); err != nil {
				l.T.Fatalf("reconciletest: insert %s: %v", table, err)
			}
		}
		if err := b.Send(); err != nil {
			l.T.Fatalf("reconciletest: insert %s: %v", table, err)
		}
	}
}

func batchOf(seq uint64) uint64 { return (seq-1)/BatchSize + 1 }

// Seen writes the packets rows of (pipe, from..to), as the events topic
// has them.
func (l *Ledger) Seen(pipe string, from, to uint64) {
	l.T.Helper()
	ms := l.EventMs
	if ms == 0 {
		ms = uint64(time.Now().UnixMilli())
	}
	// As the sink writes them: a request knows nothing of its batch (the
	// receipt names it) and has no status of its own.
	l.insert("packets", "pipe, seq, packet_id, src_relay, src_chain, dst_relay, dst_chain, operation, event_ms, version",
		int(to-from+1), func(i int) []any {
			s := from + uint64(i)
			return []any{pipe, s, PacketID(pipe, s), SrcRelay, l.SrcChain, DstRelay(pipe), l.DstChain, "WRITE", ms, uint64(1)}
		})
}

// Receipts writes the receipts of the outcomes.
func (l *Ledger) Receipts(os []Outcome) {
	l.T.Helper()
	l.insert("receipts", "packet_id, from_relay, to_relay, batch_seq, status, dest_tx, dest_height, reason, receipted_ms, version",
		len(os), func(i int) []any {
			o := os[i]
			return []any{PacketID(o.Pipe, o.Seq), DstRelay(o.Pipe), SrcRelay, batchOf(o.Seq), StatusName(o.Status), o.Tx, o.Height, "", uint64(time.Now().UnixMilli()), uint64(1)}
		})
}

// StatusName is a receipt status as the ledger writes it ("DELIVERED").
func StatusName(s amdp.ReceiptStatus) string {
	n := s.String()
	const p = "RECEIPT_STATUS_"
	if len(n) > len(p) && n[:len(p)] == p {
		return n[len(p):]
	}
	return n
}

// Anchors writes the open anchors of pipe's batches from..to, confirmed ones
// with a confirmation.
func (l *Ledger) Anchors(pipe string, from, to uint64, confirmed bool) {
	l.T.Helper()
	now := time.Now()
	l.insert("anchors", "from_relay, to_relay, batch_seq, batch_root, open_height, open_tx, open_time, receipt_height, receipt_tx, receipt_time, confirm_height, confirm_tx, confirm_time, version",
		int(to-from+1), func(i int) []any {
			b := from + uint64(i)
			var ch uint64
			if confirmed {
				ch = 30 + b
			}
			return []any{SrcRelay, DstRelay(pipe), b, "root", 10 + b, "otx", now, 20 + b, "rtx", now, ch, "ctx", now, uint64(1)}
		})
}

// Exception writes one exception record (a later version replaces an
// earlier one of the same packet).
func (l *Ledger) Exception(pipe string, seq uint64, state string, version uint64) {
	l.T.Helper()
	l.insert("exceptions", "pipe, seq, packet_id, state, reason, height, tx_hash, updated, attempts, resolved_by, version",
		1, func(int) []any {
			return []any{pipe, seq, PacketID(pipe, seq), state, "test", uint64(1), "tx", time.Now(), uint32(1), "", version}
		})
}

// Clean builds a clean history of pipe seq 1..n: requested on src,
// delivered on dst, seen, receipted and anchored in the ledger; the
// batches up to confirmedBatches are confirmed. It works in chunks, so a
// history of millions is built in bounded memory, and delivers a chunk
// while the next one is submitted.
func (l *Ledger) Clean(ctx context.Context, src, dst *simchain.Chain, pipe string, n uint64, confirmedBatches uint64) {
	l.T.Helper()
	const chunk = 100000
	type part struct{ ps []*amdp.Packet }
	submitted := make(chan part, 1)
	errc := make(chan error, 1)
	tmpl := Packets(l.T, pipe, 1, 1, fmt.Sprintf("payload of %s", pipe))[0] // signed here: no t.Fatal in the goroutine
	go func() {
		defer close(submitted)
		for from := uint64(1); from <= n; from += chunk {
			ps := copies(tmpl, from, min(from+chunk-1, n))
			for _, p := range ps {
				if _, err := src.Submit(ctx, p); err != nil {
					errc <- fmt.Errorf("submit %s/%d: %w", pipe, p.GetSequence(), err)
					return
				}
			}
			select {
			case submitted <- part{ps}:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	for p := range submitted {
		os := Deliver(ctx, l.T, dst, p.ps)
		l.Seen(pipe, p.ps[0].GetSequence(), p.ps[len(p.ps)-1].GetSequence())
		l.Receipts(os)
	}
	select {
	case err := <-errc:
		l.T.Fatalf("reconciletest: %v", err)
	default:
	}
	last := batchOf(n)
	c := min(confirmedBatches, last)
	if c > 0 {
		l.Anchors(pipe, 1, c, true)
	}
	if c < last {
		l.Anchors(pipe, c+1, last, false)
	}
}
