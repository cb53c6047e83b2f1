package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/bench"
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
		if err := c.Close(); err != nil {
			t.Logf("close: %v", err)
		}
	})
	return c
}

// send has every pipe's app send n packets, paced over about d.
func send(ctx context.Context, t *testing.T, c *bench.Cluster, n int, d time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	for pipe, app := range c.Apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gap := d / time.Duration(n)
			for i := 0; i < n; i++ {
				p, err := app.Send(ctx, []byte(fmt.Sprintf("%s #%d", pipe, i)))
				if err != nil {
					t.Errorf("send on %s: %v", pipe, err)
					return
				}
				c.Tracker.Sent(p)
				time.Sleep(gap)
			}
		}()
	}
	wg.Wait()
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
		if err == nil && a.Delivered+a.Rejected == a.Sent && c.Tracker.Receipted() >= a.Sent {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not settled: %+v, receipted %d, err %v", a, c.Tracker.Receipted(), err)
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
	p := c.Tracker.Percentiles(0.5, 0.99)
	t.Logf("%d packets over %d pipes: delivered once each, receipted; p50 %.1f ms, p99 %.1f ms", a.Sent, len(c.Apps), p[0], p[1])
}

func TestRelayRestartExactlyOnce(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); send(ctx, t, c, 300, 4*time.Second) }()

	// org-2's relay is the destination of pipe-1-2 and the source of
	// pipe-2-4 and pipe-2-1: stop it mid-stream, and start it again.
	time.Sleep(1200 * time.Millisecond)
	if err := c.StopRelay("org-2"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	time.Sleep(800 * time.Millisecond)
	if err := c.RestartRelay(ctx, "org-2"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	<-done
	a := settle(t, c)
	t.Logf("restart mid-stream: %+v", a)
}
