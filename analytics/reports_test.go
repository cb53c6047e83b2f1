package analytics

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// fixtureT0 is the start of the fixture ledger: 2026-12-01 10:00:00 UTC.
var fixtureT0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func fixtureMs(d time.Duration) uint64 { return uint64(fixtureT0.Add(d).UnixMilli()) }

// blockTime is governance block n's time: 12:00 plus n minutes.
func blockTime(n uint64) time.Time { return fixtureT0.Add(2*time.Hour + time.Duration(n)*time.Minute) }

// fillReportLedger writes a small known ledger into db, with merges
// stopped so that every duplicate and every superseded row stays on disk:
// a report that forgets FINAL counts them.
//
// Pipe p1 runs rA (orgA) -> rB (orgB); p2 the other way.
//
//	p1/1 a1 10:00:00 100 B  DELIVERED +100 ms   (packet and receipt written twice)
//	p1/2 a2 10:01:00 200 B  DELIVERED +200 ms   (an earlier row of the key: 10:00:59, 999 B;
//	                        an earlier receipt, FAILED +150 ms, inserted after the later one)
//	p1/3 a3 10:02:00 300 B  FAILED +500 ms in batch 2, then resent: DELIVERED +900 ms in batch 3;
//	                        exception RETRYING h10 -> CONFIRMED h12
//
// Superseded rows are inserted both before and after the rows that
// replace them, so a join that reads its right side without FINAL picks a
// wrong one whichever duplicate it keeps.
//
//	p1/4 a4 11:00:10 400 B  REJECTED +50 ms "contract refused"; exception MANUAL h14 -> RESOLVED h15; a proven offence
//	p1/5 a5 12-02 10:00 500 B  no receipt
//	p2/1 b1 10:00:30  50 B  TIMED_OUT +1000 ms
//	p2/2 b2 10:00:40  60 B  no receipt; exception FAILED h11 -> MANUAL h13 (written twice)
func fillReportLedger(t *testing.T, conn driver.Conn, db string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"packets", "receipts", "batches", "anchors", "exceptions", "governance", "offenders"} {
		if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+db+"."+table); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(into string, rows ...[]any) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"."+into)
		if err != nil {
			t.Fatalf("%s: %v", into, err)
		}
		for _, r := range rows {
			if err := b.Append(r...); err != nil {
				t.Fatalf("%s: %v", into, err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("%s: %v", into, err)
		}
	}
	pkt := func(pipe string, seq uint64, id string, fwd bool, bytes uint32, ev uint64) []any {
		so, sr, do, dr := "orgA", "rA", "orgB", "rB"
		if !fwd {
			so, sr, do, dr = do, dr, so, sr
		}
		return []any{pipe, seq, id, so, sr, do, dr, "WRITE", bytes, ev, ev}
	}
	const packets = "packets (pipe, seq, packet_id, src_org, src_relay, dst_org, dst_relay, operation, payload_bytes, event_ms, version)"
	insert(packets,
		pkt("p1", 1, "a1", true, 100, fixtureMs(0)),
		pkt("p1", 2, "a2", true, 999, fixtureMs(59*time.Second)),
		pkt("p1", 2, "a2", true, 200, fixtureMs(60*time.Second)),
		pkt("p1", 3, "a3", true, 300, fixtureMs(120*time.Second)),
		pkt("p1", 4, "a4", true, 400, fixtureMs(time.Hour+10*time.Second)),
		pkt("p1", 5, "a5", true, 500, fixtureMs(24*time.Hour)),
		pkt("p2", 1, "b1", false, 50, fixtureMs(30*time.Second)),
		pkt("p2", 2, "b2", false, 60, fixtureMs(40*time.Second)),
	)
	insert(packets, pkt("p1", 1, "a1", true, 100, fixtureMs(0)), pkt("p1", 5, "a5", true, 500, fixtureMs(24*time.Hour))) // redelivered

	rcpt := func(id, from, to string, batch uint64, status, tx, reason string, at uint64) []any {
		return []any{id, from, to, batch, status, tx, uint64(10), reason, at, at}
	}
	const receipts = "receipts (packet_id, from_relay, to_relay, batch_seq, status, dest_tx, dest_height, reason, receipted_ms, version)"
	insert(receipts,
		rcpt("a1", "rB", "rA", 1, "DELIVERED", "d1", "", fixtureMs(100*time.Millisecond)),
		rcpt("a2", "rB", "rA", 1, "DELIVERED", "d2", "", fixtureMs(60*time.Second+200*time.Millisecond)),
		rcpt("a3", "rB", "rA", 2, "FAILED", "", "out of gas", fixtureMs(120*time.Second+500*time.Millisecond)),
		rcpt("a4", "rB", "rA", 3, "REJECTED", "", "contract refused", fixtureMs(time.Hour+10*time.Second+50*time.Millisecond)),
		rcpt("b1", "rA", "rB", 1, "TIMED_OUT", "", "timeout height 100", fixtureMs(31*time.Second)),
	)
	insert(receipts,
		rcpt("a1", "rB", "rA", 1, "DELIVERED", "d1", "", fixtureMs(100*time.Millisecond)),
		rcpt("a3", "rB", "rA", 3, "DELIVERED", "d3", "", fixtureMs(120*time.Second+900*time.Millisecond)),
		rcpt("a2", "rB", "rA", 1, "FAILED", "", "out of gas", fixtureMs(60*time.Second+150*time.Millisecond)),
	)

	const batches = "batches (from_relay, to_relay, batch_seq, packets, receipted_ms, version)"
	insert(batches, []any{"rB", "rA", uint64(1), uint32(9), fixtureMs(30 * time.Second), fixtureMs(30 * time.Second)})
	insert(batches,
		[]any{"rA", "rB", uint64(1), uint32(2), fixtureMs(61 * time.Second), fixtureMs(61 * time.Second)},
		[]any{"rA", "rB", uint64(1), uint32(2), fixtureMs(61 * time.Second), fixtureMs(61 * time.Second)},
		[]any{"rA", "rB", uint64(2), uint32(1), fixtureMs(121 * time.Second), fixtureMs(121 * time.Second)},
		[]any{"rA", "rB", uint64(3), uint32(2), fixtureMs(time.Hour + 11*time.Second), fixtureMs(time.Hour + 11*time.Second)},
		[]any{"rB", "rA", uint64(1), uint32(1), fixtureMs(31 * time.Second), fixtureMs(31 * time.Second)},
	)
	insert(batches, []any{"rA", "rB", uint64(2), uint32(7), fixtureMs(120 * time.Second), fixtureMs(120 * time.Second)})

	zero := time.Unix(0, 0).UTC()
	anchor := func(from, to string, seq, open uint64, openTx string, rh uint64, rtx string, ch uint64, ctx string) []any {
		rt, ct := zero, zero
		if rh > 0 {
			rt = blockTime(rh)
		}
		if ch > 0 {
			ct = blockTime(ch)
		}
		v := max(open, rh, ch)
		return []any{from, to, seq, "root" + openTx, open, openTx, blockTime(open), rh, rtx, rt, ch, ctx, ct, v}
	}
	const anchors = "anchors (from_relay, to_relay, batch_seq, batch_root, open_height, open_tx, open_time, receipt_height, receipt_tx, receipt_time, confirm_height, confirm_tx, confirm_time, version)"
	insert(anchors,
		anchor("rA", "rB", 1, 5, "t5", 0, "", 0, ""),
		anchor("rA", "rB", 1, 5, "t5", 7, "t7", 9, "t9"),
		anchor("rA", "rB", 2, 5, "t5", 8, "t8", 0, ""),
		anchor("rA", "rB", 2, 5, "t5", 8, "t8", 0, ""),
		anchor("rA", "rB", 3, 6, "t6", 0, "", 0, ""),
		anchor("rB", "rA", 1, 6, "t6", 0, "", 0, ""),
	)

	exc := func(pipe string, seq uint64, id, state, reason string, h uint64, tx string, attempts uint32, by string) []any {
		return []any{pipe, seq, id, state, reason, h, tx, blockTime(h), attempts, by, h}
	}
	const exceptions = "exceptions (pipe, seq, packet_id, state, reason, height, tx_hash, updated, attempts, resolved_by, version)"
	insert(exceptions,
		exc("p1", 3, "a3", "RETRYING", "out of gas", 10, "x10", 1, ""),
		exc("p1", 3, "a3", "CONFIRMED", "confirmed in batch rA/3", 12, "t12", 1, ""),
		exc("p2", 2, "b2", "FAILED", "no route", 11, "x11", 0, ""),
		exc("p2", 2, "b2", "MANUAL", "retries exhausted", 13, "x13", 3, ""),
		exc("p2", 2, "b2", "MANUAL", "retries exhausted", 13, "x13", 3, ""),
		exc("p1", 4, "a4", "MANUAL", "contract refused", 14, "x14", 0, ""),
		exc("p1", 4, "a4", "RESOLVED", "refunded by ops", 15, "x15", 0, "cafe"),
	)

	gov := func(h uint64, i uint32, tx, typ, org string, code uint32) []any {
		return []any{h, i, tx, blockTime(h), typ, "signer-" + org, org, code, "", h}
	}
	const governance = "governance (height, tx_index, tx_hash, time, msg_type, signer, org, code, summary, version)"
	insert(governance,
		gov(3, 0, "v3", "vote", "orgA", 0),
		gov(3, 1, "v3b", "vote", "orgB", 14),
		gov(4, 0, "v4", "vote", "orgC", 9),
		gov(5, 0, "t5", "open-batches", "orgA", 0),
		gov(5, 0, "t5", "open-batches", "orgA", 0),
		gov(6, 0, "t6", "open-batches", "orgA", 0),
		gov(6, 1, "r6", "open-batches", "orgB", 9),
		gov(7, 0, "t7", "anchor-receipts", "orgB", 0),
		gov(8, 0, "t8", "anchor-receipts", "orgB", 0),
		gov(9, 0, "t9", "confirm-batches", "orgA", 0),
	)

	off := func(d time.Duration, reason, org, relay, pipe string, seq uint64, id string, proven uint8) []any {
		return []any{fixtureMs(d), "rA", "receiver", reason, org, relay, pipe, seq, id, "", proven, "", fixtureMs(d)}
	}
	const offenders = "offenders (time_ms, reporter, stage, reason, org, relay, pipe, seq, packet_id, detail, proven, evidence, version)"
	insert(offenders,
		off(time.Hour+100*time.Second, "bad-receipt", "orgB", "rB", "p1", 4, "a4", 1),
		off(time.Hour+100*time.Second, "bad-receipt", "orgB", "rB", "p1", 4, "a4", 1),
		off(time.Hour+200*time.Second, "bad-signature", "orgB", "rB", "", 0, "", 1),
		off(time.Hour+300*time.Second, "unknown-pipe", "orgB", "rB", "", 0, "", 0),
		off(time.Hour+400*time.Second, "forged", "unknown", "unknown", "p9", 1, "", 0),
		off(time.Hour+500*time.Second, "late", "orgA", "rA", "", 0, "", 0),
	)
}

// TestReports runs every report on the fixture ledger and checks each
// answer cell by cell. Every report is covered (a new one without a case
// fails), and each case is also run with FINAL removed from its SQL: for
// at least one case of every report that must give another answer, so the
// fixture really catches a report that reads duplicates.
func TestReports(t *testing.T) {
	conn, _, db := chtest.Database(t)
	fillReportLedger(t, conn, db)
	now := fixtureT0.Add(48 * time.Hour)

	type want = [][]string
	cases := []struct {
		report string
		params map[string]string
		want   want
	}{
		{"packet-history", map[string]string{"packet": "p1/4"}, want{
			{"2026-12-01T11:00:10Z", "request", "packet_id=a4 op=WRITE from=orgA/rA to=orgB/rB bytes=400"},
			{"2026-12-01T11:00:10Z", "receipt REJECTED", "batch=rA/3 by=rB dest_tx= dest_height=10 reason=contract refused"},
			{"2026-12-01T11:01:40Z", "offence receiver bad-receipt", "by=orgB/rB proven=1 reporter=rA"},
			{"2026-12-01T12:06:00Z", "anchor open", "batch=rA/3 root=roott6 tx=t6 height=6"},
			{"2026-12-01T12:15:00Z", "exception RESOLVED", "reason=refunded by ops attempts=0 tx=x15 height=15 resolved_by=cafe"},
		}},
		{"packet-history", map[string]string{"packet": "p1/3"}, want{
			{"2026-12-01T10:02:00Z", "request", "packet_id=a3 op=WRITE from=orgA/rA to=orgB/rB bytes=300"},
			{"2026-12-01T10:02:00Z", "receipt DELIVERED", "batch=rA/3 by=rB dest_tx=d3 dest_height=10"},
			{"2026-12-01T12:06:00Z", "anchor open", "batch=rA/3 root=roott6 tx=t6 height=6"},
			{"2026-12-01T12:12:00Z", "exception CONFIRMED", "reason=confirmed in batch rA/3 attempts=1 tx=t12 height=12"},
		}},
		{"packet-history", map[string]string{"packet": "p1/1"}, want{
			{"2026-12-01T10:00:00Z", "request", "packet_id=a1 op=WRITE from=orgA/rA to=orgB/rB bytes=100"},
			{"2026-12-01T10:00:00Z", "receipt DELIVERED", "batch=rA/1 by=rB dest_tx=d1 dest_height=10"},
			{"2026-12-01T12:05:00Z", "anchor open", "batch=rA/1 root=roott5 tx=t5 height=5"},
			{"2026-12-01T12:07:00Z", "anchor receipt", "batch=rA/1 tx=t7 height=7"},
			{"2026-12-01T12:09:00Z", "anchor confirm", "batch=rA/1 tx=t9 height=9"},
		}},
		{"packet-history", map[string]string{"packet": "p1/99"}, nil},
		{"pipe-daily", nil, want{
			{"2026-12-01", "p1", "4", "4", "3", "1", "0.25"},
			{"2026-12-01", "p2", "2", "1", "0", "1", "1"},
			{"2026-12-02", "p1", "1", "0", "0", "0", "0"},
		}},
		{"pipe-daily", map[string]string{"pipe": "p1", "since": "2026-12-02"}, want{
			{"2026-12-02", "p1", "1", "0", "0", "0", "0"},
		}},
		{"latency-hourly", nil, want{
			{"2026-12-01T10:00:00Z", "p1", "3", "200", "886", "900"},
			{"2026-12-01T10:00:00Z", "p2", "1", "1000", "1000", "1000"},
			{"2026-12-01T11:00:00Z", "p1", "1", "50", "50", "50"},
		}},
		{"latency-hourly", map[string]string{"pipe": "p1", "until": "2026-12-01T11:00:00Z"}, want{
			{"2026-12-01T10:00:00Z", "p1", "3", "200", "886", "900"},
		}},
		{"top-offenders", nil, want{
			{"orgB", "rB", "2", "1", "3", "2026-12-01T11:05:00Z"},
			{"orgA", "rA", "0", "1", "1", "2026-12-01T11:08:20Z"},
			{"unknown", "unknown", "0", "1", "1", "2026-12-01T11:06:40Z"},
		}},
		{"top-offenders", map[string]string{"limit": "1", "since": "2026-12-01T11:02:00Z"}, want{
			{"orgB", "rB", "1", "1", "2", "2026-12-01T11:05:00Z"},
		}},
		{"open-manual", nil, want{
			{"p2", "2", "b2", "retries exhausted", "3", "2026-12-01T12:13:00Z", "13", "x13"},
		}},
		{"open-manual", map[string]string{"pipe": "p1"}, nil},
		{"packets-per-anchor", nil, want{
			{"t5", "5", "2026-12-01T12:05:00Z", "2", "3", "2", "1"},
			{"t6", "6", "2026-12-01T12:06:00Z", "2", "3", "0", "0"},
		}},
		{"packets-per-anchor", map[string]string{"relay": "rB", "since": "2026-12-01T12:06:00Z"}, want{
			{"t6", "6", "2026-12-01T12:06:00Z", "2", "3", "0", "0"},
		}},
		{"pipe-backlog", nil, want{
			{"p1", "1", "5", "2026-12-02T10:00:00Z"},
			{"p2", "1", "2", "2026-12-01T10:00:40Z"},
		}},
		{"refusals-by-reason", nil, want{
			{"REJECTED", "contract refused", "1", "1", "2026-12-01T11:00:10Z"},
			{"TIMED_OUT", "timeout height 100", "1", "1", "2026-12-01T10:00:31Z"},
		}},
		{"governance-activity", nil, want{
			{"open-batches", "3", "2", "1", "9"},
			{"vote", "3", "1", "2", "9,14"},
			{"anchor-receipts", "2", "2", "0", ""},
			{"confirm-batches", "1", "1", "0", ""},
		}},
		{"governance-activity", map[string]string{"org": "orgB", "until": "2026-12-01T12:07:00Z"}, want{
			{"open-batches", "1", "0", "1", "9"},
			{"vote", "1", "0", "1", "14"},
		}},
		{"relay-throughput", nil, want{
			{"rA", "rB", "5", "3", "1500", "2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z"},
			{"rB", "rA", "2", "0", "110", "2026-12-01T10:00:30Z", "2026-12-01T10:00:40Z"},
		}},
		{"relay-throughput", map[string]string{"org": "orgC"}, nil},
		{"exceptions-by-state", nil, want{
			{"p1", "CONFIRMED", "1", "1", "2026-12-01T12:12:00Z"},
			{"p1", "RESOLVED", "1", "0", "2026-12-01T12:15:00Z"},
			{"p2", "MANUAL", "1", "3", "2026-12-01T12:13:00Z"},
		}},
	}

	covered := map[string]bool{}
	differs := map[string]bool{} // some case's answer changes without FINAL
	for _, c := range cases {
		covered[c.report] = true
		t.Run(c.report, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r, err := LookupReport(c.report)
			if err != nil {
				t.Fatal(err)
			}
			res, err := RunReport(ctx, conn, db, r, c.params, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := resultCells(res); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("%s %v:\n got %q\nwant %q", c.report, c.params, got, c.want)
			}

			// The same report reading rows as they are on disk.
			raw := r
			raw.sql = strings.ReplaceAll(r.sql, " FINAL", "")
			if raw.sql == r.sql {
				t.Fatalf("%s has no FINAL", c.report)
			}
			res, err = RunReport(ctx, conn, db, raw, c.params, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := resultCells(res); !reflect.DeepEqual(got, c.want) {
				differs[c.report] = true
			}
		})
	}
	for _, r := range Reports() {
		if !covered[r.Name] {
			t.Errorf("report %s has no case in TestReports", r.Name)
		}
		if !differs[r.Name] {
			t.Errorf("report %s: every case gives the same answer without FINAL: the fixture does not catch duplicates there", r.Name)
		}
	}
}

func resultCells(res *Result) [][]string {
	var out [][]string
	for i := range res.Rows {
		row := make([]string, len(res.Columns))
		for j := range row {
			row[j] = res.Cell(i, j)
		}
		out = append(out, row)
	}
	return out
}

// TestReportParams needs no server: parameters are checked before any
// query, and times parse in every documented form.
func TestReportParams(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		report string
		params map[string]string
		err    string // "" for none
	}{
		{"pipe-daily", map[string]string{"pipe": "p1", "since": "-24h", "until": "2026-12-03T00:00:00Z"}, ""},
		{"pipe-daily", map[string]string{"org": "orgA"}, "does not take --org"},
		{"pipe-daily", map[string]string{"since": "yesterday"}, "--since"},
		{"packet-history", nil, "needs --packet"},
		{"packet-history", map[string]string{"packet": "p1"}, "not PIPE/SEQ"},
		{"packet-history", map[string]string{"packet": "p1/x"}, "not a whole number"},
		{"packet-history", map[string]string{"packet": "a/b/7"}, ""},
		{"top-offenders", map[string]string{"limit": "0"}, "positive"},
		{"top-offenders", map[string]string{"limit": "-1"}, "positive"},
		{"top-offenders", map[string]string{"since": "1960-01-01"}, "outside"},
	} {
		r, err := LookupReport(c.report)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Bind(c.params, now)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s %v: %v", c.report, c.params, err)
		case c.err != "" && (!errors.Is(err, ErrBadParam) || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s %v: got %v, want ErrBadParam containing %q", c.report, c.params, err, c.err)
		}
	}
	if _, err := LookupReport("no-such"); !errors.Is(err, ErrUnknownReport) {
		t.Errorf("unknown report: %v", err)
	}
	for in, want := range map[string]time.Time{
		"-24h":                      now.Add(-24 * time.Hour),
		"-7d":                       now.Add(-7 * 24 * time.Hour),
		"-90m":                      now.Add(-90 * time.Minute),
		"2026-12-01":                time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		"2026-12-01T10:00:00+02:00": time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
	} {
		got, err := ParseReportTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseReportTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-", "-xd", "24h", "12/01/2026"} {
		if _, err := ParseReportTime(in, now); err == nil {
			t.Errorf("ParseReportTime(%q): no error", in)
		}
	}
}

// TestReportsBoundNotSpliced: a parameter value that would be SQL if
// spliced is a plain string to the server.
func TestReportsBoundNotSpliced(t *testing.T) {
	conn, _, db := chtest.Database(t)
	fillReportLedger(t, conn, db)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, _ := LookupReport("pipe-daily")
	res, err := RunReport(ctx, conn, db, r, map[string]string{"pipe": `p1' OR '1'='1`}, fixtureT0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 0 {
		t.Fatalf("a quote in --pipe matched rows: %q", resultCells(res))
	}
	if _, err := RunReport(ctx, conn, db+"; DROP DATABASE x", r, nil, fixtureT0); !errors.Is(err, ErrBadDatabase) {
		t.Fatalf("bad database: %v", err)
	}
}

// TestReportsDocs runs each SQL block of docs/analytics.md's "Reports"
// section, as an analyst would paste it, beside the report and parameters
// its first line names, on the fixture ledger: the answers must be equal,
// and every report must have its block.
func TestReportsDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/analytics.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	start := strings.Index(s, "\n## Reports\n")
	if start < 0 {
		t.Fatal(`docs/analytics.md: no "## Reports" section`)
	}
	end := len(s)
	if i := strings.Index(s[start+1:], "\n## "); i >= 0 {
		end = start + 1 + i
	}
	blocks := strings.Split(s[start:end], "```sql\n")[1:]
	conn, _, db := chtest.Database(t)
	fillReportLedger(t, conn, db)
	documented := map[string]bool{}
	for _, b := range blocks {
		sql, _, _ := strings.Cut(b, "```")
		first, body, _ := strings.Cut(sql, "\n")
		cmd := strings.Fields(strings.TrimPrefix(first, "-- ccgp analytics query "))
		if !strings.HasPrefix(first, "-- ccgp analytics query ") || len(cmd) == 0 || len(cmd)%2 == 0 {
			t.Errorf("a block does not start with '-- ccgp analytics query NAME [--flag value]...': %q", first)
			continue
		}
		name, params := cmd[0], map[string]string{}
		for i := 1; i < len(cmd); i += 2 {
			params[strings.TrimPrefix(cmd[i], "--")] = cmd[i+1]
		}
		documented[name] = true
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r, err := LookupReport(name)
			if err != nil {
				t.Fatal(err)
			}
			want, err := RunReport(ctx, conn, db, r, params, fixtureT0)
			if err != nil {
				t.Fatal(err)
			}
			if len(want.Rows) == 0 {
				t.Fatalf("%s %v answers nothing on the fixture: pick example values that show something", name, params)
			}
			pasted := Report{Name: name + " (docs)", sql: strings.TrimSuffix(strings.TrimSpace(strings.ReplaceAll(body, "ccgp.", "{db}.")), ";")}
			got, err := RunReport(ctx, conn, db, pasted, nil, fixtureT0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(resultCells(got), resultCells(want)) || !reflect.DeepEqual(got.Columns, want.Columns) {
				t.Fatalf("the documented SQL answers\n%v %q\nthe report\n%v %q", got.Columns, resultCells(got), want.Columns, resultCells(want))
			}
		})
	}
	for _, r := range Reports() {
		if !documented[r.Name] {
			t.Errorf("report %s has no SQL block in docs/analytics.md", r.Name)
		}
	}
}

// TestReportsOnSinkOutput runs reports on what the real sink writes from
// Kafka (kfake, every record produced twice) with a real governance node
// for the pipe's endpoints: the packets' and receipts' packet_id columns
// must join, and the endpoint columns must be the pipe's.
func TestReportsOnSinkOutput(t *testing.T) {
	conn, _, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)

	// 20 packets; receipts for 1..10 (batch 1) and 11..16 (batch 2), odd
	// ones FAILED; 17..20 in flight; 6 offences, even ones proven.
	base := time.Now().UTC().Truncate(time.Second)
	var rs []*kgo.Record
	for seq := uint64(1); seq <= 20; seq++ {
		r := packetRecord(t, "ccgp.events", testPipe, seq)
		r.Timestamp = base.Add(time.Duration(seq) * time.Millisecond)
		rs = append(rs, r)
	}
	for i, seqs := range [][]uint64{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {11, 12, 13, 14, 15, 16}} {
		r := receiptRecord(t, testPipe, uint64(i+1), seqs)
		r.Timestamp = base.Add(time.Second)
		rs = append(rs, r)
	}
	for i := range 6 {
		rs = append(rs, offenceRecord(i))
	}
	produce(t, prod, true, rs...)

	cfg := SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "reports-test", Pipes: gov,
		Interval: 100 * time.Millisecond, ReportEvery: time.Second,
		Retry: backoff.Policy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"packets", "receipts", "offenders"} {
		if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+db+"."+table); err != nil {
			t.Fatal(err)
		}
	}
	startSink(t, cfg, nil)
	eventually(t, 30*time.Second, "the sink wrote every record", func() bool {
		return count(t, conn, "SELECT count() FROM "+db+".packets FINAL") == 20 &&
			count(t, conn, "SELECT count() FROM "+db+".receipts FINAL") == 16 &&
			count(t, conn, "SELECT count() FROM "+db+".offenders FINAL") == 6
	})

	day := base.Format(time.DateOnly)
	for _, c := range []struct {
		report string
		params map[string]string
		want   [][]string
	}{
		{"pipe-daily", map[string]string{"pipe": testPipe}, [][]string{{day, testPipe, "20", "16", "8", "8", "0.5"}}},
		{"pipe-backlog", nil, [][]string{{testPipe, "4", "17", base.Format(time.RFC3339)}}},
		{"refusals-by-reason", nil, [][]string{{"FAILED", "contract reverted", "8", "1", base.Add(time.Second).Format(time.RFC3339)}}},
		{"top-offenders", nil, [][]string{{"org-1", "relay-org-1", "3", "3", "6", "2025-12-03T00:00:00Z"}}},
		// Payloads are {"seq":N}: 9 bytes for 1..9, 10 for 10..20.
		{"relay-throughput", map[string]string{"org": "org-2"}, [][]string{{"relay-org-1", "relay-org-2", "20", "8", "191", base.Format(time.RFC3339), base.Format(time.RFC3339)}}},
		// Latencies 984..999 ms: p50 interpolates 991.5, p99 998.85.
		{"latency-hourly", nil, [][]string{{base.Truncate(time.Hour).Format(time.RFC3339), testPipe, "16", "991.5", "998.9", "999"}}},
		// offenceRecord(2) names pipe/2 (in 2025), proven.
		{"packet-history", map[string]string{"packet": testPipe + "/2"}, [][]string{
			{"2025-12-03T00:00:00Z", "offence receiver bad_signature", "by=org-1/relay-org-1 proven=1 reporter=relay-org-2"},
			{base.Format(time.RFC3339), "request", "packet_id=" + packetIDHex(testPipe, 2) + " op=WRITE from=org-1/relay-org-1 to=org-2/relay-org-2 bytes=9"},
			{base.Add(time.Second).Format(time.RFC3339), "receipt DELIVERED", "batch=relay-org-1/1 by=relay-org-2 dest_tx=" + hex.EncodeToString(fmt.Appendf(nil, "tx-%030d", 2)) + " dest_height=502"},
		}},
	} {
		r, err := LookupReport(c.report)
		if err != nil {
			t.Fatal(err)
		}
		res, err := RunReport(ctx, conn, db, r, c.params, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got := resultCells(res); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %v on the sink's rows:\n got %q\nwant %q", c.report, c.params, got, c.want)
		}
	}
}

func packetIDHex(pipe string, seq uint64) string {
	id := amdp.PacketID(pipe, seq)
	return hex.EncodeToString(id[:])
}

// BenchmarkReports times the reports that scan packets and receipts on a
// ledger of 200 000 packets in 10 pipes over 10 days (every tenth
// without a receipt, every seventh failed), merges left to the server:
//
//	CCGP_CLICKHOUSE=... go test -run '^$' -bench BenchmarkReports -benchtime 5x ./analytics
func BenchmarkReports(b *testing.B) {
	conn, _, db := chtest.Database(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	const n = 200_000
	pb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".packets (pipe, seq, packet_id, src_org, src_relay, dst_org, dst_relay, payload_bytes, event_ms, version)")
	if err != nil {
		b.Fatal(err)
	}
	rb, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".receipts (packet_id, from_relay, to_relay, batch_seq, status, reason, receipted_ms, version)")
	if err != nil {
		b.Fatal(err)
	}
	for i := uint64(0); i < n; i++ {
		pipe := fmt.Sprintf("pipe-%d", i%10)
		id := fmt.Sprintf("%064x", i)
		ev := fixtureMs(time.Duration(i) * 10 * 24 * time.Hour / n)
		if err := pb.Append(pipe, i/10, id, "orgA", "rA", "orgB", "rB", uint32(100), ev, ev); err != nil {
			b.Fatal(err)
		}
		if i%10 == 9 {
			continue
		}
		status, reason := "DELIVERED", ""
		if i%7 == 0 {
			status, reason = "FAILED", fmt.Sprintf("reason %d", i%3)
		}
		at := ev + 50 + i%1000
		if err := rb.Append(id, "rB", "rA", i/100, status, reason, at, at); err != nil {
			b.Fatal(err)
		}
	}
	if err := pb.Send(); err != nil {
		b.Fatal(err)
	}
	if err := rb.Send(); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"pipe-daily", "latency-hourly", "pipe-backlog", "relay-throughput", "refusals-by-reason"} {
		r, err := LookupReport(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				if _, err := RunReport(ctx, conn, db, r, nil, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
