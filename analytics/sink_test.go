package analytics

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// crashAt returns a hook that kills the sink at the nth time it reaches
// stage ("insert": before a flush is sent; "commit": after ClickHouse
// acknowledged it, before its offsets are committed).
func crashAt(stage string, n int) func(string) error {
	var seen atomic.Int32
	return func(s string) error {
		if s == stage && int(seen.Add(1)) == n {
			return errCrash
		}
		return nil
	}
}

// TestSinkIdempotent: every record delivered twice, and the sink killed
// after an insert but before its commit, killed before an insert, and
// stopped by its context mid-batch, then run to the end: each packet,
// receipt, batch and offence is counted once through FINAL. A sink that
// committed before inserting loses the batch it was killed before (the
// counts never arrive); a version taken from anything but the record
// makes the two copies of a row differ (the distinct-row check).
func TestSinkIdempotent(t *testing.T) {
	conn, _, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)

	const packets, perBatch = 400, 40
	var rs []*kgo.Record
	for seq := uint64(1); seq <= packets; seq++ {
		topic := "ccgp.events"
		if seq%2 == 0 {
			topic = "ccgp.events.relay-org-1" // a relay's own topic, found by the pattern
		}
		rs = append(rs, packetRecord(t, topic, testPipe, seq))
	}
	for b := uint64(0); b < packets/perBatch; b++ {
		var seqs []uint64
		for i := uint64(1); i <= perBatch; i++ {
			seqs = append(seqs, b*perBatch+i)
		}
		rs = append(rs, receiptRecord(t, testPipe, b+1, seqs))
	}
	for i := range 30 {
		rs = append(rs, offenceRecord(i))
	}
	produce(t, prod, true, rs...)

	// Merges stopped: ClickHouse would otherwise merge the duplicates
	// away in the background, and the checks of what is on disk below
	// would prove nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"packets", "receipts", "batches", "offenders"} {
		if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+db+"."+table); err != nil {
			t.Fatal(err)
		}
	}

	cfg := SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-test", Pipes: gov,
		MaxRows: 150, Interval: 200 * time.Millisecond, ReportEvery: 100 * time.Millisecond,
		Retry: backoff.Policy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}}
	rows := func() uint64 {
		return count(t, conn, "SELECT count() FROM "+db+".packets") + count(t, conn, "SELECT count() FROM "+db+".receipts")
	}

	// 1. Killed after its third insert, before that flush's commit.
	r := startSink(t, cfg, crashAt("commit", 3))
	if err := r.wait(t); err != errCrash {
		t.Fatalf("first sink: %v, want the crash", err)
	}
	st := r.s.Stats()
	if st.Flushes != 2 {
		t.Fatalf("first sink committed %d flushes, want 2", st.Flushes)
	}
	after1 := rows()
	if after1 == 0 {
		t.Fatal("first sink inserted nothing")
	}
	// 2. Killed before its second insert: had the first sink committed
	// the third flush's offsets, or this one committed its second flush
	// before sending it, those rows would never arrive.
	r = startSink(t, cfg, crashAt("insert", 2))
	if err := r.wait(t); err != errCrash {
		t.Fatalf("second sink: %v, want the crash", err)
	}
	// 3. Stopped by its context after its first flush, mid-stream: it
	// flushes what it holds, commits and leaves.
	r = startSink(t, cfg, nil)
	eventually(t, 20*time.Second, "third sink flushes", func() bool { return r.s.Stats().Flushes >= 1 })
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("third sink stopped with %v", err)
	}
	// 4. To the end.
	r = startSink(t, cfg, nil)
	want := map[string]uint64{"packets": packets, "receipts": packets, "batches": packets / perBatch, "offenders": 30}
	eventually(t, 30*time.Second, "every record in ClickHouse once", func() bool {
		for table, n := range want {
			if count(t, conn, "SELECT count() FROM "+db+"."+table+" FINAL") != n {
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "lag 0 after the last commit", func() bool {
		st := r.s.Stats()
		return st.Lag == 0 && st.LagAt.After(time.Now().Add(-time.Second)) && st.Buffered == 0
	})
	for table, n := range want {
		raw := count(t, conn, "SELECT count() FROM "+db+"."+table)
		// Every copy of a record made the same row: the version is the
		// record's, not the clock's.
		distinct := count(t, conn, "SELECT count() FROM (SELECT DISTINCT * FROM "+db+"."+table+")")
		if distinct != n {
			t.Errorf("%s: %d distinct rows for %d records: redelivered copies differ", table, distinct, n)
		}
		if raw < 2*n {
			t.Errorf("%s: %d rows on disk for %d records produced twice: the duplicates were not exercised", table, raw, n)
		}
		t.Logf("%s: %d records, %d rows on disk, %d through FINAL", table, n, raw, n)
	}

	// The columns: endpoints from the governance chain, and the join
	// docs/analytics.md documents, on this server.
	var srcOrg, srcRelay, srcChain, dstOrg, dstRelay, dstChain, op string
	if err := conn.QueryRow(ctx, "SELECT src_org, src_relay, src_chain, dst_org, dst_relay, dst_chain, operation FROM "+db+".packets FINAL WHERE pipe = ? AND seq = 7", testPipe).
		Scan(&srcOrg, &srcRelay, &srcChain, &dstOrg, &dstRelay, &dstChain, &op); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join([]string{srcOrg, srcRelay, srcChain, dstOrg, dstRelay, dstChain, op}, " "); got != "org-1 relay-org-1 chain-org-1 org-2 relay-org-2 chain-org-2 WRITE" {
		t.Errorf("packet columns: %s", got)
	}
	join := `SELECT countIf(r.status = 'DELIVERED'), countIf(r.status = 'FAILED'), countIf(r.status = '')
FROM (SELECT packet_id FROM ` + db + `.packets FINAL) AS p
ANY LEFT JOIN (SELECT packet_id, status FROM ` + db + `.receipts FINAL) AS r USING packet_id`
	var delivered, failed, none uint64
	if err := conn.QueryRow(ctx, join).Scan(&delivered, &failed, &none); err != nil {
		t.Fatalf("the documented join: %v", err)
	}
	if delivered != packets/2 || failed != packets/2 || none != 0 {
		t.Errorf("join: %d delivered, %d failed, %d without receipt", delivered, failed, none)
	}
	var proven uint64
	if proven = count(t, conn, "SELECT countIf(proven = 1) FROM "+db+".offenders FINAL"); proven != 15 {
		t.Errorf("proven offences: %d, want 15", proven)
	}
}

// TestSinkClickHouseDown: ClickHouse cut off behind a proxy while records
// keep arriving: the sink retries, polls no more than its buffer holds,
// reports the growing lag while it is down, and once the server is back
// every record arrives exactly once.
func TestSinkClickHouseDown(t *testing.T) {
	direct, addr, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)
	px := newProxy(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := Connect(ctx, px.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	var logs syncBuffer
	const maxRows = 100
	r := startSink(t, SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-down", Pipes: gov,
		MaxRows: maxRows, Interval: 100 * time.Millisecond, ReportEvery: 100 * time.Millisecond,
		Retry: backoff.Policy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Log:   slog.New(slog.NewTextHandler(&logs, nil))}, nil)

	var rs []*kgo.Record
	for seq := uint64(1); seq <= 1000; seq++ {
		rs = append(rs, packetRecord(t, "ccgp.events", testPipe, seq))
	}
	produce(t, prod, false, rs[:100]...)
	final := func() uint64 { return count(t, direct, "SELECT count() FROM "+db+".packets FINAL") }
	eventually(t, 20*time.Second, "the first 100 packets", func() bool { return final() == 100 })

	px.cut()
	produce(t, prod, false, rs[100:]...)
	eventually(t, 20*time.Second, "the lag reported while ClickHouse is down", func() bool {
		st := r.s.Stats()
		return st.Down && st.Failures >= 2 && st.Lag >= 900-maxRows
	})
	time.Sleep(300 * time.Millisecond) // a few more retries
	st := r.s.Stats()
	// Polling stopped with the buffer full: 100 records before the cut,
	// one buffer's worth after it.
	if st.Buffered > maxRows || st.Records > 100+maxRows {
		t.Fatalf("buffered %d rows (limit %d), consumed %d records: it kept polling while ClickHouse was down", st.Buffered, maxRows, st.Records)
	}
	if n := final(); n != 100 {
		t.Fatalf("%d packets while ClickHouse was cut off", n)
	}
	t.Logf("while down: %d failed attempts, lag %d, buffered %d, last error: %s", st.Failures, st.Lag, st.Buffered, st.LastError)

	px.restore()
	eventually(t, 30*time.Second, "every packet after ClickHouse is back", func() bool { return final() == 1000 })
	eventually(t, 10*time.Second, "lag back to 0", func() bool { st := r.s.Stats(); return !st.Down && st.Lag == 0 })
	if out := logs.String(); !strings.Contains(out, "clickhouse_down=true") || !strings.Contains(out, "insert failed") ||
		!strings.Contains(out, "rows_per_s=") {
		t.Errorf("log lacks the outage or progress lines:\n%s", out)
	}
}

// TestSinkBadRecords: undecodable records on each topic are counted and
// skipped, their offsets committed with the rest; the good ones arrive.
func TestSinkBadRecords(t *testing.T) {
	conn, _, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)
	good := packetRecord(t, "ccgp.events", testPipe, 1)
	unknownPipe := packetRecord(t, "ccgp.events", "pipe-nobody-registered", 1)
	bad := []*kgo.Record{
		{Topic: "ccgp.events", Value: []byte("not a packet")},
		{Topic: "ccgp.events.relay-org-1", Value: good.Value[:len(good.Value)-3]}, // truncated
		{Topic: ReceiptsTopic, Value: []byte{0xff, 0xff, 0xff}},
		{Topic: offence.Topic, Value: []byte(`{"stage":""}`)},
		{Topic: offence.Topic, Value: []byte(`{not json`)},
	}
	produce(t, prod, false, append(bad, good, unknownPipe, receiptRecord(t, testPipe, 1, []uint64{1}), offenceRecord(1))...)
	r := startSink(t, SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-bad", Pipes: gov,
		Interval: 100 * time.Millisecond, ReportEvery: 100 * time.Millisecond}, nil)
	eventually(t, 20*time.Second, "good records in, bad ones skipped, lag 0", func() bool {
		st := r.s.Stats()
		return st.Records == 9 && st.Flushes > 0 && st.Buffered == 0 && st.Lag == 0
	})
	if st := r.s.Stats(); st.Skipped != uint64(len(bad)) || st.Packets != 2 || st.Receipts != 1 || st.Batches != 1 || st.Offenders != 1 {
		t.Fatalf("stats %+v, want %d skipped, 2 packets, 1 receipt, 1 batch, 1 offence", st, len(bad))
	}
	// A pipe the chain proves absent: the row is kept, without endpoints.
	var org string
	if err := conn.QueryRow(context.Background(), "SELECT src_org FROM "+db+".packets FINAL WHERE pipe = 'pipe-nobody-registered'").Scan(&org); err != nil || org != "" {
		t.Fatalf("unknown pipe's row: org %q, %v", org, err)
	}
}

// TestSinkThroughput logs the rows/s into ClickHouse for 200k packets
// already in Kafka (decode, pipe lookup cached, insert in batches of
// 100k, commit).
func TestSinkThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput figure: not with -short")
	}
	conn, _, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)
	const n = 200_000
	proto := packetRecord(t, "ccgp.events", testPipe, 1)
	// One signed packet re-sequenced: the sink does not verify signatures
	// (the relays did), and signing 200k would dominate the setup.
	rs := make([]*kgo.Record, 0, n)
	for seq := uint64(1); seq <= n; seq++ {
		rs = append(rs, resequence(t, proto, seq))
	}
	produce(t, prod, false, rs...)
	start := time.Now()
	r := startSink(t, SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-bench", Pipes: gov, MaxRows: 100_000}, nil)
	var first time.Time // the first record consumed: the group is joined
	eventually(t, 60*time.Second, "200k packets acknowledged", func() bool {
		st := r.s.Stats()
		if first.IsZero() && st.Records > 0 {
			first = time.Now()
		}
		return st.Packets == n
	})
	d, steady := time.Since(start), time.Since(first)
	if got := count(t, conn, "SELECT count() FROM "+db+".packets FINAL"); got != n {
		t.Fatalf("%d packets through FINAL, want %d", got, n)
	}
	t.Logf("sink throughput: %d packets from Kafka into ClickHouse in %v: %.0f rows/s with the group join, %.0f rows/s from the first record consumed",
		n, d.Round(time.Millisecond), float64(n)/d.Seconds(), float64(n)/steady.Seconds())
}

// syncBuffer is a bytes.Buffer safe for the sink's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestSinkStop: a sink stopped by its context flushes what it holds and
// commits it (the next sink of the group finds nothing to do); stopped
// while ClickHouse is unreachable, it gives up after ShutdownTimeout
// without committing, and the next sink writes those records.
func TestSinkStop(t *testing.T) {
	direct, addr, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)
	px := newProxy(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := Connect(ctx, px.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Never due by time or size: only the stop flushes.
	cfg := SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-stop", Pipes: gov,
		MaxRows: 10_000, Interval: time.Hour, ReportEvery: 100 * time.Millisecond, ShutdownTimeout: time.Second}
	final := func() uint64 { return count(t, direct, "SELECT count() FROM "+db+".packets FINAL") }
	var rs []*kgo.Record
	for seq := uint64(1); seq <= 80; seq++ {
		rs = append(rs, packetRecord(t, "ccgp.events", testPipe, seq))
	}

	produce(t, prod, false, rs[:50]...)
	r := startSink(t, cfg, nil)
	eventually(t, 20*time.Second, "50 packets buffered", func() bool { return r.s.Stats().Buffered == 50 })
	if n := final(); n != 0 {
		t.Fatalf("%d rows before the stop", n)
	}
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if n := final(); n != 50 {
		t.Fatalf("%d packets after the stop, want 50", n)
	}
	r = startSink(t, cfg, nil)
	eventually(t, 20*time.Second, "the next sink's lag measured at 0", func() bool { return r.s.Stats().Lag == 0 })
	if st := r.s.Stats(); st.Records != 0 {
		t.Fatalf("the next sink consumed %d records: the stop did not commit", st.Records)
	}

	produce(t, prod, false, rs[50:]...)
	eventually(t, 20*time.Second, "30 more buffered", func() bool { return r.s.Stats().Buffered == 30 })
	px.cut()
	start := time.Now()
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stopping with ClickHouse unreachable took %v (ShutdownTimeout 1 s)", d)
	}
	px.restore()
	cfg.Interval = 100 * time.Millisecond
	r = startSink(t, cfg, nil)
	eventually(t, 20*time.Second, "the 30 packets by the next sink", func() bool { return final() == 80 })
	if st := r.s.Stats(); st.Records != 30 {
		t.Fatalf("the next sink consumed %d records, want the 30 not committed", st.Records)
	}
}

// TestSinkNewRelayTopic: a relay that joins after the sink started gets
// its events topic read, found by the subscription pattern.
func TestSinkNewRelayTopic(t *testing.T) {
	conn, _, db := chtest.Database(t)
	gov := governance(t)
	brokers, prod := kafka(t)
	r := startSink(t, SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-new-topic", Pipes: gov,
		Interval: 100 * time.Millisecond, ReportEvery: 100 * time.Millisecond,
		KafkaOpts: []kgo.Opt{kgo.MetadataMaxAge(300 * time.Millisecond), kgo.MetadataMinAge(100 * time.Millisecond)}}, nil)
	produce(t, prod, false, packetRecord(t, "ccgp.events", testPipe, 1))
	eventually(t, 20*time.Second, "the first packet", func() bool { return r.s.Stats().Packets == 1 })
	produce(t, prod, false, packetRecord(t, "ccgp.events.relay-joined-later", testPipe, 2),
		packetRecord(t, "ccgp.eventsx", testPipe, 3)) // not a relay's events topic: not read
	eventually(t, 20*time.Second, "the packet on the new relay's topic", func() bool {
		return count(t, conn, "SELECT count() FROM "+db+".packets FINAL WHERE seq = 2") == 1
	})
	time.Sleep(500 * time.Millisecond)
	if st := r.s.Stats(); st.Records != 2 || st.Skipped != 0 {
		t.Fatalf("stats %+v: want 2 records read, the ccgp.eventsx one not", st)
	}
}
