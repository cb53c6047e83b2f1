package bench

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// TestRunClosedLoop runs the harness end to end, briefly: ceilings, the
// in-process mesh, the per-packet baseline, a closed-loop window, the
// drain and the accounting. It checks what must hold whatever the
// machine's speed: nothing lost or duplicated, and every figure of the
// JSON object present.
func TestRunClosedLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole mesh: not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := Run(ctx, RunOptions{Duration: 3 * time.Second, Warmup: time.Second, Pipes: 3, Payload: 64, Window: 256,
		CeilingTime: 200 * time.Millisecond, BaselineTxs: 200, MaxPresign: 30000, Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("lost %d, duplicated %d of %d sent", r.Lost, r.Duplicated, r.Sent)
	}
	if r.Sent == 0 || r.Receipted != r.Sent || r.Delivered != r.Sent {
		t.Fatalf("sent %d, delivered %d, receipted %d", r.Sent, r.Delivered, r.Receipted)
	}
	if r.E2EPacketsPerS <= 0 || r.VerifyCeilingPerS <= 0 || r.PerPacketBaselinePerS <= 0 || r.KafkaCeilingPerS <= 0 || r.QUICCeilingMBps <= 0 {
		t.Fatalf("a rate is missing: %+v", r)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"e2e_packets_per_s", "verify_ceiling_per_s", "per_packet_baseline_per_s", "ratio_verify", "ratio_baseline",
		"p50_delivered_ms", "p99_delivered_ms", "p99_confirmed_ms", "chain_txs_per_packet", "wire_bytes_per_packet",
		"allocs_per_packet", "lost", "duplicated", "gomaxprocs", "suite"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %q", k)
		}
	}
	t.Logf("%.0f packets/s; p99 delivered %s; %.0f wire bytes/packet", r.E2EPacketsPerS, fmtMs(r.P99DeliveredMs), r.WireBytesPerPacket)
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if !math.IsNaN(h.Quantile(0.5)) {
		t.Fatal("empty histogram has a median")
	}
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 9.9}, {0.999, 9.99}, {1, 10}} {
		if got := h.Quantile(c.q); math.Abs(got-c.want)/c.want > 0.02 {
			t.Errorf("q%.3f = %.3f ms, want %.3f ms ± 2%%", c.q, got, c.want)
		}
	}
	for v := uint64(0); v < 1<<20; v = v*3/2 + 1 {
		b := bucket(v)
		if mid := bucketValue(b); math.Abs(mid-float64(v)) > float64(v)/60+1 {
			t.Errorf("value %d in bucket %d (mid %.0f)", v, b, mid)
		}
	}
}

// testWriter sends the harness's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
