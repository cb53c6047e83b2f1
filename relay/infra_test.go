package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// sentSeqsC reads, from each source chain, how many requests each app's
// pipe holds: its sequences are 1..n, gap-free.
func sentSeqsC(c *bench.Cluster) map[string]uint64 {
	out := map[string]uint64{}
	for pipe, app := range c.Apps {
		out[pipe] = app.Chain.NextSequence(pipe) - 1
	}
	return out
}

// exactlyOnceC checks every destination chain's own records: each packet
// the apps sent executed (or was refused) exactly once, none is missing.
func exactlyOnceC(t *testing.T, c *bench.Cluster, sent map[string]uint64, pipes []govchain.PipeSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	to := map[string]string{}
	for _, ps := range pipes {
		to[ps.ID] = ps.To
	}
	var missing, doubled []string
	for pipe, n := range sent {
		ch := c.Chains[to[pipe]]
		for s := uint64(1); s <= n; s++ {
			rec, ok, err := ch.DeliveryRecord(ctx, amdp.PacketID(pipe, s))
			switch {
			case err != nil:
				t.Fatalf("destination record of %s/%d: %v", pipe, s, err)
			case !ok:
				missing = append(missing, fmt.Sprintf("%s/%d", pipe, s))
			case rec.Count != 1:
				doubled = append(doubled, fmt.Sprintf("%s/%d x%d", pipe, s, rec.Count))
			}
		}
	}
	if len(missing) > 0 || len(doubled) > 0 {
		t.Fatalf("destination chains: %d missing %v, %d not exactly once %v", len(missing), head(missing), len(doubled), head(doubled))
	}
}

func head(s []string) []string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// paced has every app send perTick packets every 100 ms for d, in the
// test's goroutine's stead; errors come back on the returned channel's
// close (nil: all sent). Nothing here calls t.Fatal off the test goroutine.
func paced(ctx context.Context, c *bench.Cluster, perTick int, d time.Duration) <-chan error {
	out := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		errs := make(chan error, len(c.Apps))
		for pipe, app := range c.Apps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
					for j := 0; j < perTick; j++ {
						p, err := app.Send(ctx, []byte(fmt.Sprintf("%s #%d.%d", pipe, i, j)))
						if err != nil {
							errs <- fmt.Errorf("send on %s: %w", pipe, err)
							return
						}
						c.Tracker.Sent(p)
					}
					select {
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					case <-tick.C:
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		out <- <-errs // the first error, or nil
	}()
	return out
}

// stillRunningC fails the test if any of the cluster's relays has stopped.
func stillRunningC(t *testing.T, c *bench.Cluster) {
	t.Helper()
	for _, p := range c.Parts {
		if running, err := c.Running(p.Org); !running {
			t.Fatalf("relay of %s stopped during the fault: %v", p.Org, err)
		}
	}
}

// settledC waits until every sent packet is settled on its destination
// chain, with a distinct receipt each.
func settledC(t *testing.T, c *bench.Cluster, d time.Duration) bench.Accounting {
	t.Helper()
	var a bench.Accounting
	var err error
	waitUntil(t, d, func() string {
		return fmt.Sprintf("not settled: %+v, distinct receipts %d, err %v", a, c.Tracker.ReceiptedDistinct(), err)
	}, func() bool {
		a, err = c.Account(context.Background())
		return err == nil && a.Delivered+a.Rejected == a.Sent && c.Tracker.ReceiptedDistinct() == a.Sent
	})
	return a
}

// The broker freezes behind its proxy for 10 s while the relays carry
// traffic: connections stay open and nothing moves, as with a hung broker
// or a cut link. Afterwards every packet is delivered exactly once, is
// final on the governance chain, and no relay stopped.
func TestBrokerPause(t *testing.T) {
	if testing.Short() {
		t.Skip("holds the broker for 10 s")
	}
	c := startCluster(t, func(o *bench.ClusterOptions) { o.KafkaProxy = true })
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	sending := paced(ctx, c, 5, 14*time.Second)
	time.Sleep(2 * time.Second)
	before := c.Tracker.ReceiptedDistinct()
	c.KafkaProxy.Pause()
	paused := time.Now()
	time.Sleep(10 * time.Second)
	// Nothing gets through a frozen broker: the receipts that came in
	// are of batches already consumed before the pause.
	during := c.Tracker.ReceiptedDistinct() - before
	stillRunningC(t, c)
	c.KafkaProxy.Resume()
	t.Logf("broker frozen %v; %d receipts meanwhile (batches consumed before)", time.Since(paused).Round(time.Millisecond), during)
	if err := <-sending; err != nil {
		t.Fatal(err)
	}
	a, final := requireCleanEnd(ctx, t, c, "the broker pause")
	t.Logf("broker paused 10 s mid-stream: %+v; on the governance chain %v", a, final)
}

// The governance node the relays talk to (the only validator: the chain
// halts) stops for 8 s mid-stream and starts again on its state. The relays
// reach it over RPC, as remote relays do. Afterwards every packet is
// delivered once, final on the chain, and no relay stopped.
func TestGovRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("holds the governance chain down for 8 s")
	}
	c := startCluster(t, func(o *bench.ClusterOptions) { o.GovOverRPC = true })
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	sending := paced(ctx, c, 5, 12*time.Second)
	time.Sleep(2 * time.Second)
	h := c.Node.Height()
	if err := c.StopGovNode(0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	stillRunningC(t, c)
	if err := c.StartGovNode(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Node.WaitForHeight(ctx, h+2); err != nil {
		t.Fatal(err)
	}
	if err := <-sending; err != nil {
		t.Fatal(err)
	}
	a, final := requireCleanEnd(ctx, t, c, "the governance restart")
	t.Logf("governance node down 8 s mid-stream (stopped at height %d): %+v; on the governance chain %v", h, a, final)
}

// requireCleanEnd is the end of an outage test: once the traffic settled,
// every packet sent was delivered exactly once, is confirmed on the
// governance chain, and no relay stopped.
func requireCleanEnd(ctx context.Context, t *testing.T, c *bench.Cluster, after string) (bench.Accounting, map[govchain.PacketState]int) {
	t.Helper()
	a := settledC(t, c, 45*time.Second)
	exactlyOnceC(t, c, sentSeqsC(c), bench.DefaultPipes())
	final := requireFinal(ctx, t, c)
	stillRunningC(t, c)
	if a.Lost != 0 || a.Duplicated != 0 || final[govchain.PacketState_PACKET_CONFIRMED] != a.Sent {
		t.Fatalf("after %s: %+v, final on chain %v", after, a, final)
	}
	return a, final
}
