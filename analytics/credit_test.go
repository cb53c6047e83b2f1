package analytics

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// ledger builds ledger rows for a credit test and writes them the way the
// sink does (its rows and insert; offences decoded from real offence
// records), plus exception rows as the governance follower writes them.
type creditLedger struct {
	t          testing.TB
	rows       rows
	exceptions [][]any
}

type endpoints struct{ srcOrg, srcRelay, dstOrg, dstRelay string }

func pid(pipe string, seq uint64) string {
	id := amdp.PacketID(pipe, seq)
	return hex.EncodeToString(id[:])
}

// packet records a packet's source event at at.
func (l *creditLedger) packet(pipe string, seq uint64, e endpoints, at time.Time) {
	l.rows.packets = append(l.rows.packets, packetRow{pipe: pipe, seq: seq, packetID: pid(pipe, seq), srcOrg: e.srcOrg, srcRelay: e.srcRelay,
		srcChain: "chain-" + e.srcOrg, dstOrg: e.dstOrg, dstRelay: e.dstRelay, dstChain: "chain-" + e.dstOrg, operation: "WRITE",
		eventMs: uint64(at.UnixMilli())})
}

// receipt records the receipt signed by relay by for a packet, at at.
func (l *creditLedger) receipt(pipe string, seq uint64, by, to, status, destTx string, destHeight uint64, at time.Time) {
	l.rows.receipts = append(l.rows.receipts, receiptRow{packetID: pid(pipe, seq), fromRelay: by, toRelay: to, batchSeq: 1,
		status: status, destTx: destTx, destHeight: destHeight, receiptedMs: uint64(at.UnixMilli())})
}

// offence records an offence record as a relay writes it to ccgp.offenders.
func (l *creditLedger) offence(ctx context.Context, r offence.Record) {
	l.t.Helper()
	b, err := offence.Encode(r)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := newDecoder(nil).add(ctx, &l.rows, &kgo.Record{Topic: offence.Topic, Value: b}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *creditLedger) exception(pipe string, seq uint64, state string, height uint64) {
	l.exceptions = append(l.exceptions, []any{pipe, seq, pid(pipe, seq), state, "test", height, "", time.Unix(1, 0), uint32(1), "", height})
}

func (l *creditLedger) write(ctx context.Context, conn driver.Conn, db string) {
	l.t.Helper()
	s := &Sink{cfg: SinkConfig{Conn: conn, Database: db}}
	if err := s.insert(ctx, &l.rows); err != nil {
		l.t.Fatal(err)
	}
	l.rows.reset()
	if len(l.exceptions) == 0 {
		return
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".exceptions (pipe, seq, packet_id, state, reason, height, tx_hash, updated, attempts, resolved_by, version)")
	if err != nil {
		l.t.Fatal(err)
	}
	for _, e := range l.exceptions {
		if err := b.Append(e...); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		l.t.Fatal(err)
	}
	l.exceptions = nil
}

func creditDB(t *testing.T) (context.Context, driver.Conn, string) {
	t.Helper()
	conn, _, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return ctx, conn, db
}

func byParty(scores []CreditScore) map[string]CreditScore {
	m := map[string]CreditScore{}
	for _, s := range scores {
		m[s.Kind+":"+s.Party] = s
	}
	return m
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestCreditAttribution: each fault lands on its cause. relay-a sends to
// relay-b (one packet refused by relay-b before its chain, two never sent
// while relay-b was receiving, one of them rolled back, one slow), to
// relay-c (down: no receipt at all) and to relay-d (its chain refused
// everything: recorded refusals). relay-b has a proven offence, relay-a
// two claimed ones.
func TestCreditAttribution(t *testing.T) {
	ctx, conn, db := creditDB(t)
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	ab := endpoints{"org-a", "relay-a", "org-b", "relay-b"}
	ac := endpoints{"org-a", "relay-a", "org-c", "relay-c"}
	ad := endpoints{"org-a", "relay-a", "org-d", "relay-d"}
	l := &creditLedger{t: t}
	for seq := uint64(1); seq <= 10; seq++ {
		at := t0.Add(10*time.Minute + time.Duration(seq)*time.Second)
		l.packet("p-ab", seq, ab, at)
		switch seq {
		case 10:
			l.receipt("p-ab", seq, "relay-b", "relay-a", "REJECTED", "", 0, at.Add(time.Second)) // relay-b refused it itself
		case 9:
			l.receipt("p-ab", seq, "relay-b", "relay-a", "DELIVERED", "aa", 9, at.Add(10*time.Second)) // slow
		default:
			l.receipt("p-ab", seq, "relay-b", "relay-a", "DELIVERED", "aa", 9, at.Add(500*time.Millisecond))
		}
	}
	for seq := uint64(1); seq <= 2; seq++ { // never receipted while relay-b was receiving
		l.packet("p-ab2", seq, ab, t0.Add(10*time.Minute+30*time.Second))
	}
	l.exception("p-ab2", 1, "ROLLED_BACK", 40)
	for seq := uint64(1); seq <= 4; seq++ { // relay-c is down
		l.packet("p-ac", seq, ac, t0.Add(20*time.Minute))
	}
	l.exception("p-ac", 1, "ROLLED_BACK", 41)
	for seq := uint64(1); seq <= 5; seq++ { // chain-d refuses, and records it
		at := t0.Add(30 * time.Minute)
		l.packet("p-ad", seq, ad, at)
		l.receipt("p-ad", seq, "relay-d", "relay-a", "REJECTED", "dd", 7, at.Add(time.Second))
	}
	l.exception("p-ad", 1, "ROLLED_BACK", 42)
	l.packet("p-ab", 11, ab, t0.Add(59*time.Minute+50*time.Second)) // too recent to judge
	l.packet("p-ab", 12, ab, t0.Add(-time.Minute))                  // before the window
	l.offence(ctx, offence.Record{TimeUnixMs: t0.Add(15 * time.Minute).UnixMilli(), Reporter: "relay-a", Stage: "receiver",
		Reason: "bad_signature", Org: "org-b", Relay: "relay-b", Pipe: "p-ab", Seq: 3, Proven: true})
	for i := range 2 {
		l.offence(ctx, offence.Record{TimeUnixMs: t0.Add(16*time.Minute + time.Duration(i)*time.Second).UnixMilli(), Reporter: "relay-b",
			Stage: "router", Reason: "bad_signature", Org: "org-a", Relay: "relay-a", Pipe: "p-ab", Seq: uint64(i + 1)})
	}
	zAt := t0.Add(17 * time.Minute).UnixMilli() // a relay with nothing but a claimed offence
	l.offence(ctx, offence.Record{TimeUnixMs: zAt, Reporter: "relay-b", Stage: "router", Reason: "sequence_replay", Org: "org-z", Relay: "relay-z", Pipe: "p-zb", Seq: 4})
	l.write(ctx, conn, db)

	now := t0.Add(2 * time.Hour)
	scores, err := Credit(ctx, conn, db, CreditWindow{Start: t0, End: t0.Add(time.Hour), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	got := byParty(scores)
	type want struct {
		packets, delivered, timely, dfaults, afaults, comp, chain, pending, proven, claimed uint64
	}
	for party, w := range map[string]want{
		// 10 + 2 + 4 judged; p-ad decided by its chain; p-ab/11 pending.
		"relay:relay-a": {packets: 16, delivered: 9, timely: 8, dfaults: 2, comp: 1, chain: 5, pending: 1, claimed: 2},
		"org:org-a":     {packets: 16, delivered: 9, timely: 8, dfaults: 2, comp: 1, chain: 5, pending: 1, claimed: 2},
		"relay:relay-b": {packets: 12, delivered: 9, timely: 8, dfaults: 1, pending: 1, proven: 1},
		"relay:relay-c": {packets: 4, afaults: 4, comp: 1},
		"org:org-c":     {packets: 4, afaults: 4, comp: 1},
		"relay:relay-d": {chain: 5},
	} {
		s, ok := got[party]
		if !ok {
			t.Fatalf("no score for %s: %v", party, scores)
		}
		g := want{s.Packets, s.Delivered, s.Timely, s.DeliveryFaults, s.AvailFaults, s.Compensated, s.ChainDecided, s.Pending, s.ProvenOffences, s.ClaimedOffences}
		if g != w {
			t.Errorf("%s: counts %+v, want %+v (reasons %q)", party, g, w, s.Reasons)
		}
	}
	a := got["relay:relay-a"]
	if wantScore := 0.4*(1-2.0/16) + 0.2*(8.0/9) + 0.2*(1-1.0/16) + 0.2; !near(a.Score, wantScore) || a.Offences != 1 {
		t.Errorf("relay-a score %v offences %v, want %v and 1 (claimed offences are not weighted)", a.Score, a.Offences, wantScore)
	}
	if b := got["relay:relay-b"]; !near(b.Score, 0.5*(0.4*(1-1.0/12)+0.2*(8.0/9)+0.2+0.2)) || b.Score1000 != uint32(math.Round(b.Score*1000)) {
		t.Errorf("relay-b (one proven offence): score %v (%d)", b.Score, b.Score1000)
	}
	if c := got["relay:relay-c"]; !near(c.Availability, 0) || !near(c.Delivery, 1) {
		t.Errorf("relay-c, down: availability %v delivery %v", c.Availability, c.Delivery)
	}
	if d := got["relay:relay-d"]; d.Score != 1 || !strings.Contains(strings.Join(d.Reasons, "\n"), "destination chain") {
		t.Errorf("relay-d, whose chain refused: score %v reasons %q", d.Score, d.Reasons)
	}
	if !strings.Contains(strings.Join(a.Reasons, "\n"), "2 claimed offences") {
		t.Errorf("relay-a reasons: %q", a.Reasons)
	}

	// The digest is what docs/analytics.md says: a third party recomputes
	// relay-c's from its rows.
	h := sha256.New()
	fmt.Fprintf(h, "ccgp-credit/1\trelay\trelay-c\t%d\t%d\n", t0.Unix(), t0.Add(time.Hour).Unix())
	var lines []string
	for seq := uint64(1); seq <= 4; seq++ {
		ex := ""
		if seq == 1 {
			ex = "ROLLED_BACK"
		}
		lines = append(lines, fmt.Sprintf("packet\tp-ac\t%d\t%s\tmissing_dst\t0\t%s\n", seq, pid("p-ac", seq), ex))
	}
	slices.Sort(lines)
	h.Write([]byte(strings.Join(lines, "")))
	if c := got["relay:relay-c"]; c.Digest != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("relay-c digest %s, recomputed %x", c.Digest, h.Sum(nil))
	}
	hz := sha256.Sum256([]byte(fmt.Sprintf("ccgp-credit/1\trelay\trelay-z\t%d\t%d\noffence\t%d\trelay-b\trouter\tsequence_replay\tp-zb\t4\t\t0\n",
		t0.Unix(), t0.Add(time.Hour).Unix(), zAt)))
	if z := got["relay:relay-z"]; z.Digest != hex.EncodeToString(hz[:]) || z.Score != 1 || z.ClaimedOffences != 1 {
		t.Errorf("relay-z (one claimed offence): digest %s, recomputed %x; score %v", z.Digest, hz, z.Score)
	}

	// The rows are in credit_scores, and a recomputation replaces them.
	now = now.Add(time.Minute)
	if _, err := Credit(ctx, conn, db, CreditWindow{Start: t0, End: t0.Add(time.Hour), Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	var n uint64
	var score float64
	var digest string
	if err := conn.QueryRow(ctx, "SELECT count(), any(score), any(evidence_digest) FROM "+db+".credit_scores FINAL WHERE kind = 'relay' AND party = 'relay-a'").Scan(&n, &score, &digest); err != nil {
		t.Fatal(err)
	}
	if n != 1 || !near(score, a.Score) || digest != a.Digest {
		t.Fatalf("credit_scores for relay-a: %d rows, score %v, digest %s", n, score, digest)
	}
}

// TestCreditStall: when every packet of the window is slow alike (a
// network-wide stall), no one loses timeliness; the one relay slower than
// the rest does.
func TestCreditStall(t *testing.T) {
	ctx, conn, db := creditDB(t)
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	l := &creditLedger{t: t}
	for i, r := range []string{"relay-a", "relay-b", "relay-c", "relay-d"} {
		e := endpoints{"org-x", r, "org-y", "relay-y"}
		pipe := "p-" + r
		for seq := uint64(1); seq <= 5; seq++ {
			at := t0.Add(time.Duration(i)*time.Minute + time.Duration(seq)*time.Second)
			l.packet(pipe, seq, e, at)
			lat := 6 * time.Second // every one over the 2 s objective
			if r == "relay-d" {
				lat = 30 * time.Second
			}
			l.receipt(pipe, seq, "relay-y", r, "DELIVERED", "aa", 1, at.Add(lat))
		}
	}
	l.write(ctx, conn, db)
	scores, err := Credit(ctx, conn, db, CreditWindow{Start: t0, End: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got := byParty(scores)
	for _, r := range []string{"relay-a", "relay-b", "relay-c"} {
		if s := got["relay:"+r]; s.Timeliness != 1 {
			t.Errorf("%s in a stall: timeliness %v (%q)", r, s.Timeliness, s.Reasons)
		}
	}
	if s := got["relay:relay-d"]; s.Timeliness != 0 {
		t.Errorf("relay-d, 5x slower than the network: timeliness %v", s.Timeliness)
	}
}

func TestCreditBadInput(t *testing.T) {
	ctx, conn, db := creditDB(t)
	t0 := time.Now()
	if _, err := Credit(ctx, conn, "bad-name", CreditWindow{Start: t0, End: t0.Add(time.Hour)}); err == nil {
		t.Fatal("bad database name accepted")
	}
	if _, err := Credit(ctx, conn, db, CreditWindow{Start: t0, End: t0}); err == nil || !strings.Contains(err.Error(), "after the start") {
		t.Fatalf("empty window: %v", err)
	}
	if _, err := Credit(ctx, conn, db, CreditWindow{Start: t0, End: t0.Add(time.Hour), Objectives: map[string]time.Duration{"x'); DROP": time.Second}}); err == nil {
		t.Fatal("a pipe objective that is not a pipe id was spliced into SQL")
	}
}

// BenchmarkCredit scores a window of 100 000 packets over 20 pipes between
// 10 relays (every packet receipted, one in 50 refused by its chain, one
// in 100 never receipted) and 1 000 offences: the cost of one
// `ccgp analytics credit` on that ledger, both queries and the digests.
func BenchmarkCredit(b *testing.B) {
	conn, _, db := chtest.Database(b)
	ctx := context.Background()
	if _, err := Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	l := &creditLedger{t: b}
	const n = 100_000
	for i := range n {
		src, dst := i%10, (i/10+1+i%10)%10
		if src == dst {
			dst = (dst + 1) % 10
		}
		e := endpoints{fmt.Sprintf("org-%d", src), fmt.Sprintf("relay-%d", src), fmt.Sprintf("org-%d", dst), fmt.Sprintf("relay-%d", dst)}
		pipe := fmt.Sprintf("p-%d", i%20)
		seq := uint64(i/20 + 1)
		at := t0.Add(time.Duration(i) * 30 * time.Millisecond)
		l.packet(pipe, seq, e, at)
		switch {
		case i%100 == 0:
		case i%50 == 1:
			l.receipt(pipe, seq, e.dstRelay, e.srcRelay, "REJECTED", "aa", 3, at.Add(time.Second))
		default:
			l.receipt(pipe, seq, e.dstRelay, e.srcRelay, "DELIVERED", "aa", 3, at.Add(time.Duration(300+i%700)*time.Millisecond))
		}
	}
	for i := range 1000 {
		l.rows.offenders = append(l.rows.offenders, offenderRow{TimeUnixMs: t0.Add(time.Duration(i) * time.Second).UnixMilli(),
			Reporter: "relay-0", Stage: "receiver", Reason: "bad_signature", Org: "org-3", Relay: "relay-3", Pipe: "p-3", Seq: uint64(i + 1), Proven: i%2 == 0})
	}
	s := &Sink{cfg: SinkConfig{Conn: conn, Database: db}}
	if err := s.insert(ctx, &l.rows); err != nil {
		b.Fatal(err)
	}
	w := CreditWindow{Start: t0, End: t0.Add(time.Hour)}
	b.ResetTimer()
	for b.Loop() {
		scores, err := Credit(ctx, conn, db, w)
		if err != nil || len(scores) != 20 {
			b.Fatalf("%d scores: %v", len(scores), err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
