package mesh

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBackpressure: with a destination chain that blocks, Sends to one
// peer stop at MaxInFlight: the next one blocks before it sends anything
// (no queue grows), honours its ctx, and completes once the chain moves.
func TestBackpressure(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	rb := n.relays["relay-b"]
	gate, entered := make(chan struct{}), make(chan struct{}, 16)
	rb.chain.set(func(c *memChain) { c.gate, c.entered = gate, entered })
	b := n.start("relay-b")
	a := n.start("relay-a", sendOnly, func(c *Config) { c.MaxInFlight = 2 })
	released := false
	release := func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(release) // so that Close does not wait on a blocked delivery

	type result struct {
		seq uint64
		err error
	}
	results := make(chan result, 3)
	send := func(seq uint64) {
		batch := n.batch("relay-a", "relay-b", seq, n.packet("ab-1", []byte("p")))
		go func() {
			_, err := a.Send(ctxT(t, 20*time.Second), "relay-b", batch)
			results <- result{seq, err}
		}()
	}
	send(1)
	send(2)
	for range 2 {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the first two batches did not reach the chain")
		}
	}
	send(3)
	// A fourth Send with a short deadline waits for a slot and gives up.
	_, err := a.Send(ctxT(t, 150*time.Millisecond), "relay-b", n.batch("relay-a", "relay-b", 4, n.packet("ab-1", []byte("p"))))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send past the in-flight limit: %v, want context.DeadlineExceeded", err)
	}
	select {
	case r := <-results:
		t.Fatalf("batch %d returned (%v) while the chain was blocked", r.seq, r.err)
	case <-entered:
		t.Fatal("a third batch reached the chain past the in-flight limit")
	case <-time.After(100 * time.Millisecond):
	}
	if got := value(t, b.m.batchesReceived); got != 2 {
		t.Fatalf("relay-b received %v batches, want 2: the third must wait at the sender", got)
	}

	release()
	for range 3 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("batch %d: %v", r.seq, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Sends did not complete after the chain was released")
		}
	}
}

// TestSendCancelWhileWaiting: cancelling ctx while the peer is still
// delivering returns the ctx error, wrapped.
func TestSendCancelWhileWaiting(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	gate := make(chan struct{})
	n.relays["relay-b"].chain.set(func(c *memChain) { c.gate = gate })
	t.Cleanup(func() { close(gate) })
	n.start("relay-b")
	a := n.start("relay-a", sendOnly)
	start := time.Now()
	_, err := a.Send(ctxT(t, 200*time.Millisecond), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Send took %v to notice its ctx", d)
	}
}

// TestReconnect: the receiver goes down and comes back at the same
// address; a Send issued meanwhile retries with backoff and succeeds soon
// after it returns.
func TestReconnect(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	n.start("relay-b")
	a := n.start("relay-a", sendOnly, func(c *Config) {
		c.DialTimeout = 250 * time.Millisecond
		c.MinBackoff = 20 * time.Millisecond
		c.MaxBackoff = 200 * time.Millisecond
	})
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil))); err != nil {
		t.Fatal(err)
	}
	n.stop("relay-b")

	batch := n.batch("relay-a", "relay-b", 2, n.packets("ab-1", 4, 50)...)
	done := make(chan error, 1)
	go func() {
		_, err := a.Send(ctxT(t, 20*time.Second), "relay-b", batch)
		done <- err
	}()
	// Let it fail a few times.
	time.Sleep(600 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Send returned while the receiver was down: %v", err)
	default:
	}
	n.start("relay-b")
	back := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("delivered %v after the receiver came back", time.Since(back).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not succeed within 5s of the receiver coming back")
	}
	for _, p := range batch.Packets {
		if got := n.relays["relay-b"].chain.execCount(p.ID()); got != 1 {
			t.Fatalf("packet executed %d times", got)
		}
	}
}

// TestReceiverShutdownMidDelivery: the receiver closes while a delivery
// is in progress; the sender resends to the restarted receiver and
// nothing is executed twice.
func TestReceiverShutdownMidDelivery(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	chain := n.relays["relay-b"].chain
	gate, entered := make(chan struct{}), make(chan struct{}, 4)
	chain.set(func(c *memChain) { c.gate, c.entered = gate, entered })
	n.start("relay-b")
	a := n.start("relay-a", sendOnly, func(c *Config) { c.DialTimeout = 250 * time.Millisecond })
	batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 3, 10)...)
	done := make(chan error, 1)
	go func() {
		_, err := a.Send(ctxT(t, 20*time.Second), "relay-b", batch)
		done <- err
	}()
	<-entered
	// Close cancels the blocked Deliver; its markers stay.
	n.stop("relay-b")
	chain.set(func(c *memChain) { c.gate, c.entered = nil, nil })
	n.start("relay-b")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not complete after the restart")
	}
	for _, p := range batch.Packets {
		if got := chain.execCount(p.ID()); got != 1 {
			t.Fatalf("packet executed %d times", got)
		}
	}
	if _, finds, _ := chain.counts(); finds != len(batch.Packets) {
		t.Errorf("FindDelivery asked %d times, want %d (the markers of the cancelled delivery)", finds, len(batch.Packets))
	}
	close(gate)
}

// TestReceiverCrash: the receiver vanishes without closing its
// connections (as in a crash) and restarts at the same address. Its
// stored stateless reset key lets it reset the sender's stale connection
// at once, so the next Send redials instead of waiting for the idle
// timeout.
func TestReceiverCrash(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	n.start("relay-b")
	a := n.start("relay-a", sendOnly, func(c *Config) { c.IdleTimeout = time.Minute })
	batch := n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil))
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch); err != nil {
		t.Fatal(err)
	}
	old := n.relays["relay-b"].ep
	old.tr.Close() // the socket goes; no CONNECTION_CLOSE reaches relay-a
	n.stop("relay-b")
	n.start("relay-b")

	start := time.Now()
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 2, n.packet("ab-1", nil))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Send took %v after the restart: the stale connection was not reset", d)
	}
}
