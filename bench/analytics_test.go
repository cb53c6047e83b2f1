package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
)

// TestRunAnalytics runs the harness briefly with the analytics sink and
// follower beside it, against a real ClickHouse server: the JSON carries
// the sink's figures, the ledger holds every packet sent with its
// receipt, and the writers' CPU is a part of its own, not the relays'.
func TestRunAnalytics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole mesh: not in -short")
	}
	addr := chtest.Addr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := Run(ctx, RunOptions{Duration: 3 * time.Second, Warmup: time.Second, Pipes: 3, Payload: 64, Window: 256,
		SkipCeilings: true, BaselineTxs: -1, MaxPresign: 10000, ClickHouse: addr, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent == 0 || r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("sent %d, lost %d, duplicated %d", r.Sent, r.Lost, r.Duplicated)
	}
	switch {
	case r.AnalyticsSinkRowsPerS == nil || *r.AnalyticsSinkRowsPerS <= 0:
		t.Fatalf("no sink rows/s: %v", r.AnalyticsSinkRowsPerS)
	case r.AnalyticsSinkMaxLag == nil || r.AnalyticsSinkLagEnd == nil:
		t.Fatal("no sink lag")
	case r.AnalyticsRows["packets"] != r.Sent || r.AnalyticsRows["receipts"] != r.Sent:
		t.Fatalf("ledger rows %v for %d packets sent", r.AnalyticsRows, r.Sent)
	case r.AnalyticsRows["governance"] == 0:
		t.Fatalf("the follower wrote no governance txs: %v", r.AnalyticsRows)
	}
	var analytics bool
	for _, c := range r.CPUByPart {
		analytics = analytics || (c.Part == partAnalytics && c.SPer1000 > 0)
	}
	if !analytics {
		t.Fatalf("no %q part in the CPU breakdown: %+v", partAnalytics, r.CPUByPart)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"analytics_sink_rows_per_s", "analytics_sink_max_lag", "analytics_sink_lag_window_end", "analytics_rows", "relay_cpu_s_per_1000_packets"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %q", k)
		}
	}
	t.Logf("sink %.0f rows/s, largest lag %d; ledger %v", *r.AnalyticsSinkRowsPerS, *r.AnalyticsSinkMaxLag, r.AnalyticsRows)
}
