package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/govchain"
)

func startCluster(t *testing.T, opts ...func(*bench.ClusterOptions)) *bench.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lvl := slog.LevelError
	if testing.Verbose() {
		lvl = slog.LevelWarn
	}
	o := bench.ClusterOptions{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))}
	for _, f := range opts {
		f(&o)
	}
	c, err := bench.StartCluster(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A component that fails to stop cleanly is a failure of the
		// test, not a note: it is how a leaked goroutine or a lost
		// write shows.
		if err := c.Close(); err != nil {
			t.Errorf("close the cluster: %v", err)
		}
	})
	return c
}

// send has every pipe's app send n packets, paced over about d, and fails
// the test if one could not. Call it from the test's goroutine; a test
// that sends in the background uses trySend.
func send(ctx context.Context, t *testing.T, c *bench.Cluster, n int, d time.Duration) {
	t.Helper()
	if err := trySend(ctx, c, n, d); err != nil {
		t.Fatal(err)
	}
}

// trySend has every pipe's app send n packets, paced over about d, and
// returns every app's error: it may run on any goroutine.
func trySend(ctx context.Context, c *bench.Cluster, n int, d time.Duration) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(c.Apps))
	for pipe := range c.Apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gap := d / time.Duration(n)
			errs <- trySendOn(ctx, c, pipe, n, func(i int) string { return fmt.Sprintf("%s #%d", pipe, i) }, gap)
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// settle waits until every sent packet is accounted for on its destination
// chain, then checks nothing was lost, duplicated or rejected.
func settle(t *testing.T, c *bench.Cluster) bench.Accounting {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var a bench.Accounting
	var err error
	for {
		a, err = c.Account(ctx)
		// Distinct receipts: a batch re-sent after a restart is
		// receipted again, and its copies must not stand in for
		// packets that never got a receipt.
		if err == nil && a.Delivered+a.Rejected == a.Sent && c.Tracker.ReceiptedDistinct() == a.Sent {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not settled: %+v, receipted %d distinct packets (%d receipts), err %v", a, c.Tracker.ReceiptedDistinct(), c.Tracker.Receipted(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if a.Lost != 0 || a.Duplicated != 0 || a.Rejected != 0 || a.Delivered != a.Sent {
		t.Fatalf("accounting: %+v", a)
	}
	return a
}

func TestEndToEnd(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	send(ctx, t, c, 250, 2*time.Second)
	a := settle(t, c)
	if a.Sent != 250*len(c.Apps) {
		t.Fatalf("sent %d", a.Sent)
	}
	if got := requireFinal(ctx, t, c); got[govchain.PacketState_PACKET_CONFIRMED] != a.Sent {
		t.Fatalf("final states on the governance chain: %v, want all %d confirmed", got, a.Sent)
	}
	p := c.Tracker.Percentiles(0.5, 0.99)
	t.Logf("%d packets over %d pipes: delivered once each, receipted; p50 %.1f ms, p99 %.1f ms", a.Sent, len(c.Apps), p[0], p[1])
}

func TestRelayRestartExactlyOnce(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const perPipe = 300
	total := perPipe * len(c.Apps)
	sent := make(chan error, 1)
	go func() { sent <- trySend(ctx, c, perPipe, 4*time.Second) }()

	// org-2's relay is the destination of pipe-1-2 and the source of
	// pipe-2-4 and pipe-2-1: stop it mid-stream (once its chain has
	// executed some of pipe-1-2), hold it down while the apps send on,
	// and start it again.
	dst := c.Chains["org-2"]
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("org-2 executed %d", dst.Stats().Delivered) },
		func() bool { return dst.Stats().Delivered >= 50 })
	if err := c.StopRelay("org-2"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	down := c.Tracker.SentCount()
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("%d sent while org-2 is down", c.Tracker.SentCount()-down) },
		func() bool { return c.Tracker.SentCount()-down >= total/10 })
	if err := c.RestartRelay(ctx, "org-2"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	a := settle(t, c)
	if got := requireFinal(ctx, t, c); got[govchain.PacketState_PACKET_CONFIRMED] != total {
		t.Fatalf("final states on the governance chain: %v, want all %d confirmed", got, total)
	}
	t.Logf("restart mid-stream: %+v", a)
}
