package analytics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// anomalyNow is the evaluations' clock in these tests.
var anomalyNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func ms(t time.Time) uint64 { return uint64(t.UnixMilli()) }

// ledgerRows writes ledger rows as the sink and the follower do.
type ledgerRows struct {
	t    *testing.T
	conn driver.Conn
	db   string
}

func (l ledgerRows) send(table, cols string, rows [][]any) {
	l.t.Helper()
	if len(rows) == 0 {
		return
	}
	b, err := l.conn.PrepareBatch(context.Background(), "INSERT INTO "+l.db+"."+table+" ("+cols+")")
	if err != nil {
		l.t.Fatal(err)
	}
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			l.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		l.t.Fatal(err)
	}
}

// traffic writes n requests on pipe (src -> dst) from `at`, 100 ms apart,
// and, unless status is "", their receipts `delay` later in batches of
// 10, each batch receipt-anchored unless unanchored. Every row is written
// twice (redelivery).
func (l ledgerRows) traffic(pipe, src, dst string, n int, at time.Time, delay time.Duration, status func(i int) string, anchored bool) {
	l.t.Helper()
	var ps, rs, as [][]any
	for i := range n {
		seq := uint64(i + 1)
		id := amdp.PacketID(pipe, seq)
		hexID := fmt.Sprintf("%x", id[:])
		ev := at.Add(time.Duration(i) * 100 * time.Millisecond)
		ps = append(ps, []any{pipe, seq, hexID, src, dst, ms(ev), ms(ev)})
		st := status(i)
		if st == "" {
			continue
		}
		batch := uint64(i/10 + 1)
		rs = append(rs, []any{hexID, dst, src, batch, st, ms(ev.Add(delay)), ms(ev.Add(delay))})
		if i%10 == 0 && anchored {
			as = append(as, []any{src, dst, batch, uint64(7), uint64(9), uint64(9)})
		}
	}
	for range 2 {
		l.send("packets", "pipe, seq, packet_id, src_relay, dst_relay, event_ms, version", ps)
		l.send("receipts", "packet_id, from_relay, to_relay, batch_seq, status, receipted_ms, version", rs)
		l.send("anchors", "from_relay, to_relay, batch_seq, open_height, receipt_height, version", as)
	}
}

func (l ledgerRows) offence(at time.Time, org, relay, reason string, proven bool) {
	l.t.Helper()
	var p uint8
	if proven {
		p = 1
	}
	row := []any{ms(at), "relay-2", "receiver", reason, org, relay, p, ms(at)}
	l.send("offenders", "time_ms, reporter, stage, reason, org, relay, proven, version", [][]any{row, row})
}

func delivered(int) string { return "DELIVERED" }

// clean is traffic on which no rule may fire: pipe-a answered in 200 ms
// and anchored, an offence of a reason the rules do not count.
func clean(l ledgerRows) {
	l.traffic("pipe-a", "relay-1", "relay-2", 40, anomalyNow.Add(-90*time.Second), 200*time.Millisecond, delivered, true)
	l.offence(anomalyNow.Add(-time.Minute), "org-1", "relay-1", "pipe_not_active", false)
}

func migrated(t *testing.T) (driver.Conn, string) {
	t.Helper()
	conn, _, db := chtest.Database(t)
	if _, err := Migrate(context.Background(), conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, db
}

// TestAnomalyRules: each rule of the default set fires, for exactly the
// key its traffic names, on traffic made to trigger it, and no rule fires
// on clean traffic. The ledger rows are all written twice, as redelivery
// does: a rule that reads without FINAL counts them twice (the row under
// min_packets shows it).
func TestAnomalyRules(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	type want struct{ rule, key string }
	for _, tc := range []struct {
		name      string
		make      func(l ledgerRows)
		lags      []int64 // the sink's lag at each evaluation
		reconcile int
		want      []want
	}{
		{name: "clean traffic", make: func(ledgerRows) {}, lags: []int64{5, 3, 8, 2, 9, 4}},
		{name: "failure rate", want: []want{{"pipe_failure_rate", "pipe-b"}}, make: func(l ledgerRows) {
			l.traffic("pipe-b", "relay-1", "relay-3", 30, anomalyNow.Add(-80*time.Second), 300*time.Millisecond,
				func(i int) string {
					if i%3 == 0 {
						return "REJECTED"
					}
					return "DELIVERED"
				}, true)
		}},
		{name: "latency over the objective", want: []want{{"pipe_latency_p99", "pipe-c"}}, make: func(l ledgerRows) {
			l.traffic("pipe-c", "relay-3", "relay-2", 30, anomalyNow.Add(-5*time.Minute), 20*time.Second, delivered, true)
		}},
		{name: "a forged signature", want: []want{{"forged_or_replayed", "org-9/relay-9"}}, make: func(l ledgerRows) {
			l.offence(anomalyNow.Add(-2*time.Minute), "org-9", "relay-9", "bad_signature", true)
		}},
		{name: "sink lag growing", lags: []int64{20000, 30000, 40000, 50000, 60000, 70000}, want: []want{{"sink_lag_growing", "sink"}},
			make: func(ledgerRows) {}},
		{name: "lag high but not growing", lags: []int64{70000, 60000, 61000, 62000, 63000, 64000}, make: func(ledgerRows) {}},
		{name: "anchor lag", want: []want{{"anchor_lag", "relay-3->relay-4"}}, make: func(l ledgerRows) {
			l.traffic("pipe-e", "relay-3", "relay-4", 20, anomalyNow.Add(-5*time.Minute), 200*time.Millisecond, delivered, false)
		}},
		{name: "silent relay", want: []want{{"silent_relay", "relay-5"}}, make: func(l ledgerRows) {
			l.traffic("pipe-d", "relay-1", "relay-5", 20, anomalyNow.Add(-60*time.Second), 0, func(int) string { return "" }, false)
		}},
		{name: "silent relay under min_packets: 6 requests, each row written twice", make: func(l ledgerRows) {
			l.traffic("pipe-d", "relay-1", "relay-5", 6, anomalyNow.Add(-60*time.Second), 0, func(int) string { return "" }, false)
		}},
		{name: "reconciliation differences", reconcile: 3, want: []want{{"reconciliation_differences", "ledger"}}, make: func(ledgerRows) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, db := migrated(t)
			l := ledgerRows{t, conn, db}
			clean(l)
			tc.make(l)
			lags := tc.lags
			w, err := NewWatcher(context.Background(), WatcherConfig{Conn: conn, DB: db, Rules: DefaultRules(),
				Now: func() time.Time { return anomalyNow },
				Lag: func() (int64, bool) {
					if len(lags) == 0 {
						return 0, false
					}
					v := lags[0]
					lags = lags[1:]
					return v, true
				},
				Reconcile: func(context.Context, time.Time, time.Time) (int, error) { return tc.reconcile, nil }})
			if err != nil {
				t.Fatal(err)
			}
			var active []Anomaly
			for range max(len(tc.lags), 1) {
				if active, err = w.Evaluate(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			var got []want
			for _, a := range active {
				got = append(got, want{a.Rule, a.Key})
				for _, part := range strings.FieldsFunc(a.Key, func(r rune) bool { return r == '/' || r == '>' }) {
					if part = strings.TrimSuffix(part, "-"); a.Key != "sink" && a.Key != "ledger" && !strings.Contains(a.Message, part) {
						t.Errorf("%s/%s: message %q does not name %q", a.Rule, a.Key, a.Message, part)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("fired %v, want %v (%+v)", got, tc.want, active)
			}
		})
	}
}

// TestAnomalyLifecycle: an anomaly is one row and one record while it
// lasts, across evaluations and a restart of the watcher; when it stops it
// is resolved in the table and one more record says so.
func TestAnomalyLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	conn, db := migrated(t)
	l := ledgerRows{t, conn, db}
	clean(l)
	l.offence(anomalyNow.Add(-time.Minute), "org-9", "relay-9", "bad_signature", true)
	now := anomalyNow
	var published []Anomaly
	cfg := WatcherConfig{Conn: conn, DB: db, Rules: DefaultRules(), Now: func() time.Time { return now },
		Publish: func(_ context.Context, as []Anomaly) error { published = append(published, as...); return nil }}
	ctx := context.Background()
	w, err := NewWatcher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		now = anomalyNow.Add(time.Duration(i) * 10 * time.Second)
		if _, err := w.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A restarted watcher carries on the same anomaly.
	if w, err = NewWatcher(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	now = anomalyNow.Add(40 * time.Second)
	if _, err := w.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := ListAnomalies(ctx, conn, db, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || len(published) != 1 || !list[0].FirstSeen.Equal(anomalyNow) || !list[0].LastSeen.Equal(now) || list[0].Resolved {
		t.Fatalf("while it lasts: rows %+v, records %+v; want one row from %v to %v and one record", list, published, anomalyNow, now)
	}
	// The offence leaves the window: resolved.
	now = anomalyNow.Add(20 * time.Minute)
	if _, err := w.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	if list, err = ListAnomalies(ctx, conn, db, time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	open, err := ListAnomalies(ctx, conn, db, time.Time{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !list[0].Resolved || len(open) != 0 || len(published) != 2 || !published[1].Resolved {
		t.Fatalf("after it stopped: rows %+v, open %+v, records %+v; want it resolved and a second record", list, open, published)
	}
}

// TestAnomalyPublishRetried: a record that could not be published goes
// out with the next evaluation; the table is written regardless.
func TestAnomalyPublishRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("needs ClickHouse")
	}
	conn, db := migrated(t)
	ledgerRows{t, conn, db}.offence(anomalyNow.Add(-time.Minute), "org-9", "relay-9", "false_refusal", true)
	down := true
	var published []Anomaly
	w, err := NewWatcher(context.Background(), WatcherConfig{Conn: conn, DB: db, Rules: DefaultRules(), Now: func() time.Time { return anomalyNow },
		Publish: func(_ context.Context, as []Anomaly) error {
			if down {
				return errors.New("broker down")
			}
			published = append(published, as...)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Evaluate(context.Background()); err == nil || !strings.Contains(err.Error(), "broker down") {
		t.Fatalf("evaluate with the broker down: %v", err)
	}
	if list, _ := ListAnomalies(context.Background(), conn, db, time.Time{}, false); len(list) != 1 {
		t.Fatalf("the row is written whatever the broker does: %+v", list)
	}
	down = false
	if _, err := w.Evaluate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(published) != 1 || published[0].Rule != "forged_or_replayed" {
		t.Fatalf("published %+v, want the one record", published)
	}
}

func TestParseRules(t *testing.T) {
	for _, tc := range []struct{ name, yaml, err string }{
		{"unknown field", "rules:\n  - {name: a, kind: offences, window: 1m, reasons: [x], colour: red}", "colour"},
		{"unknown kind", "rules:\n  - {name: a, kind: vibes, window: 1m}", `kind "vibes"`},
		{"twice", "rules:\n  - {name: a, kind: offences, window: 1m, reasons: [x]}\n  - {name: a, kind: offences, window: 1m, reasons: [x]}", "used twice"},
		{"no window", "rules:\n  - {name: a, kind: offences, reasons: [x]}", "window"},
		{"bad quantile", "rules:\n  - {name: a, kind: latency, window: 1m, quantile: 99, threshold: 100}", "quantile"},
		{"share over 1", "rules:\n  - {name: a, kind: failure_rate, window: 1m, threshold: 5}", "share"},
		{"no reasons", "rules:\n  - {name: a, kind: offences, window: 1m}", "reasons"},
		{"one lag sample", "rules:\n  - {name: a, kind: consumer_lag, samples: 1}", "samples"},
		{"bad severity", "rules:\n  - {name: a, kind: offences, window: 1m, reasons: [x], severity: meh}", "severity"},
		{"bad name", "rules:\n  - {name: 'a b', kind: offences, window: 1m, reasons: [x]}", "name"},
		{"empty", "rules: []", "no rules"},
		{"not yaml", "rules: [", "bad anomaly rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRules([]byte(tc.yaml))
			if !errors.Is(err, ErrBadRules) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseRules: %v, want ErrBadRules mentioning %q", err, tc.err)
			}
		})
	}
	r := DefaultRules()
	kinds := map[string]bool{}
	for _, x := range r.Rules {
		kinds[x.Kind] = true
	}
	if len(kinds) != 7 {
		t.Errorf("the default rules cover %d kinds, want all 7: %v", len(kinds), kinds)
	}
}

// TestDeployedRulesAreTheDefault: deploy/analytics/rules.yaml is the file
// the binary carries.
func TestDeployedRulesAreTheDefault(t *testing.T) {
	b, err := os.ReadFile("../deploy/analytics/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, defaultRules) {
		t.Fatal("deploy/analytics/rules.yaml differs from analytics/anomaly_rules.yaml: copy one onto the other")
	}
}
