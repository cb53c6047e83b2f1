package relay_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/compensator"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// sendOn has one pipe's app send n packets with payload(i), and fails the
// test if one could not. Call it from the test's goroutine; a test that
// sends in the background uses trySendOn.
func sendOn(ctx context.Context, t *testing.T, c *bench.Cluster, pipe string, n int, payload func(i int) string) {
	t.Helper()
	if err := trySendOn(ctx, c, pipe, n, payload, 0); err != nil {
		t.Fatal(err)
	}
}

// trySendOn has one pipe's app send n packets with payload(i), gap apart,
// each recorded in c.Tracker; it returns the first error and may run on
// any goroutine.
func trySendOn(ctx context.Context, c *bench.Cluster, pipe string, n int, payload func(i int) string, gap time.Duration) error {
	app := c.Apps[pipe]
	for i := 0; i < n; i++ {
		p, err := app.Send(ctx, []byte(payload(i)))
		if err != nil {
			return fmt.Errorf("send #%d on %s: %w", i, pipe, err)
		}
		c.Tracker.Sent(p)
		if gap > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("send on %s: %w", pipe, ctx.Err())
			case <-time.After(gap):
			}
		}
	}
	return nil
}

// waitUntil polls cond (bounded) and fails the test with what() if it never holds.
func waitUntil(t *testing.T, d time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func exceptions(t *testing.T, c *bench.Cluster, state govchain.PacketState) []*govchain.TxException {
	t.Helper()
	exs, err := c.Gov.Exceptions(context.Background(), state)
	if err != nil {
		t.Fatal(err)
	}
	return exs
}

func TestRollback(t *testing.T) {
	c := startCluster(t, func(o *bench.ClusterOptions) { o.RejectPrefix = []byte("REJECT") })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// Every fifth packet is one the destination contract refuses.
	sendOn(ctx, t, c, "pipe-1-2", 100, func(i int) string {
		if i%5 == 0 {
			return fmt.Sprintf("REJECT #%d", i)
		}
		return fmt.Sprintf("ok #%d", i)
	})
	src := c.Chains["org-1"]
	waitUntil(t, 60*time.Second, func() string {
		return fmt.Sprintf("rolled back %d of 20, exceptions %d", src.Stats().RolledBack, len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)))
	}, func() bool {
		return src.Stats().RolledBack == 20 && len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)) == 20
	})
	a := settleWith(t, c)
	if a.Delivered != 80 || a.Rejected != 20 || a.Lost != 0 || a.Duplicated != 0 {
		t.Fatalf("accounting: %+v", a)
	}
	// Each rolled-back packet's derived state, read with proofs, says so.
	st, _, err := c.Gov.PacketStatus(ctx, "pipe-1-2", 1)
	if err != nil || st.State != govchain.PacketState_PACKET_ROLLED_BACK {
		t.Fatalf("packet 1: %v %v", st, err)
	}
	if st.Exception == nil || len(st.Exception.History) != 2 {
		t.Fatalf("history of packet 1: %v", st.Exception)
	}
	got := requireFinal(ctx, t, c)
	if got[govchain.PacketState_PACKET_CONFIRMED] != 80 || got[govchain.PacketState_PACKET_ROLLED_BACK] != 20 {
		t.Fatalf("final states on the governance chain: %v, want 80 confirmed and 20 rolled back", got)
	}
}

// settleWith waits until every sent packet is settled (delivered or
// refused) on its destination chain and receipted; it allows refusals.
func settleWith(t *testing.T, c *bench.Cluster) bench.Accounting {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		a, err := c.Account(ctx)
		if err == nil && a.Delivered+a.Rejected == a.Sent {
			return a
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not settled: %+v, err %v", a, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestManualIntervention(t *testing.T) {
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.SendBudget = time.Second
		o.Compensation = compensator.Policy{MaxAttempts: 2, Base: 200 * time.Millisecond, Max: 400 * time.Millisecond}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	// The destination relay is down for longer than every retry.
	if err := c.StopRelay("org-2"); err != nil {
		t.Fatal(err)
	}
	sendOn(ctx, t, c, "pipe-1-2", 30, func(i int) string { return fmt.Sprintf("held #%d", i) })
	waitUntil(t, 90*time.Second, func() string {
		return fmt.Sprintf("%d of 30 in manual", len(exceptions(t, c, govchain.PacketState_PACKET_MANUAL)))
	}, func() bool { return len(exceptions(t, c, govchain.PacketState_PACKET_MANUAL)) == 30 })
	if d := c.Chains["org-2"].Stats().Delivered; d != 0 {
		t.Fatalf("%d delivered while the relay was down", d)
	}

	// The relay comes back; a person resolves: retry.
	if err := c.RestartRelay(ctx, "org-2"); err != nil {
		t.Fatal(err)
	}
	var refs []*govchain.PacketRef
	for _, ex := range exceptions(t, c, govchain.PacketState_PACKET_MANUAL) {
		refs = append(refs, &govchain.PacketRef{Pipe: ex.Pipe, Seq: ex.Seq})
	}
	if _, err := c.Gov.Submit(ctx, c.Parts[0].Admin, &govchain.MsgResolve{Packets: refs, Action: "retry", Note: "destination is back"}); err != nil {
		t.Fatal(err)
	}
	// Delivered on retry, then confirmed: the confirmation of the resent
	// batch moves each exception record on from DELIVERED.
	retried := func() int {
		return len(exceptions(t, c, govchain.PacketState_PACKET_DELIVERED)) + len(exceptions(t, c, govchain.PacketState_PACKET_CONFIRMED))
	}
	waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("%d of 30 delivered on retry", retried()) },
		func() bool { return retried() == 30 })
	a := settleWith(t, c)
	if a.Delivered != 30 || a.Lost != 0 || a.Duplicated != 0 {
		t.Fatalf("accounting: %+v", a)
	}
	// The chain's word: the resent batch's confirmation settles each
	// retried packet's exception record at CONFIRMED.
	got := requireFinal(ctx, t, c)
	if got[govchain.PacketState_PACKET_CONFIRMED] != 30 {
		t.Fatalf("final states on the governance chain: %v, want 30 confirmed", got)
	}
	t.Logf("manual then retry: %+v, states on the governance chain %v", a, got)
}

// strictChain refuses to execute a packet whose anchor is not committed on
// the governance chain, and counts the attempts: the proof that strict
// delivery waits for the anchor comes from the destination side.
type strictChain struct {
	subchain.Chain
	gov        *govchain.Client
	violations atomic.Int64
	checked    atomic.Int64
}

func (s *strictChain) Deliver(ctx context.Context, ps []*amdp.Packet) ([]subchain.Delivery, error) {
	for _, p := range ps {
		through, err := s.gov.AnchoredThrough(ctx, p.PipeId)
		if err != nil {
			return nil, err
		}
		s.checked.Add(1)
		if p.Sequence > through {
			s.violations.Add(1)
		}
	}
	return s.Chain.Deliver(ctx, ps)
}

func TestStrictMode(t *testing.T) {
	var sc *strictChain
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.Pipes = []govchain.PipeSpec{{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_STRICT}}
		o.WrapChain = func(org string, ch subchain.Chain, gov *govchain.Client) subchain.Chain {
			if org != "org-2" {
				return ch
			}
			sc = &strictChain{Chain: ch, gov: gov}
			return sc
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sendOn(ctx, t, c, "pipe-1-2", 300, func(i int) string { return fmt.Sprintf("strict #%d", i) })
	a := settle(t, c)
	if sc.checked.Load() < 300 || sc.violations.Load() != 0 {
		t.Fatalf("checked %d deliveries, %d before their anchor", sc.checked.Load(), sc.violations.Load())
	}
	if got := requireFinal(ctx, t, c); got[govchain.PacketState_PACKET_CONFIRMED] != 300 {
		t.Fatalf("final states on the governance chain: %v, want 300 confirmed", got)
	}
	t.Logf("strict: %+v", a)
}

func TestValidatorDown(t *testing.T) {
	c := startCluster(t, func(o *bench.ClusterOptions) { o.Validators = 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- trySend(ctx, c, 200, 4*time.Second) }()
	// One validator of four goes down once traffic flows and anchors commit.
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("executed %d", delivered(c)) },
		func() bool { return delivered(c) >= 100 })
	if err := c.Nodes[3].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	a := settle(t, c)
	// Every packet of the run is anchored, receipted and confirmed with
	// one validator down: the chain says so.
	if got := requireFinal(ctx, t, c); got[govchain.PacketState_PACKET_CONFIRMED] != a.Sent {
		t.Fatalf("final states on the governance chain: %v, want all %d confirmed", got, a.Sent)
	}
	t.Logf("validator down: %+v", a)
}

// delivered is how many packets the destination chains have executed.
func delivered(c *bench.Cluster) int {
	n := 0
	for _, ch := range c.Chains {
		n += int(ch.Stats().Delivered)
	}
	return n
}

func TestPartitionHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a partition for 30 s")
	}
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.Proxies = true
		o.SendBudget = 2 * time.Minute // the router rides the partition out
	})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < 40; i++ { // 4 s of traffic on the pipe into org-2
			if err := trySendOn(ctx, c, "pipe-1-2", 10, func(j int) string { return fmt.Sprintf("p #%d.%d", i, j) }, 0); err != nil {
				sent <- err
				return
			}
			time.Sleep(100 * time.Millisecond) // pacing, not a wait for a condition
		}
		sent <- nil
	}()
	dst := c.Chains["org-2"]
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("org-2 executed %d", dst.Stats().Delivered) },
		func() bool { return dst.Stats().Delivered > 0 })
	c.Proxies["org-2"].Pause()
	before := dst.Stats().Delivered
	// The fault itself: the path stays cut for 30 s, longer than any
	// send attempt, while the app keeps sending.
	time.Sleep(30 * time.Second)
	if during := dst.Stats().Delivered; during-before > 20 {
		t.Fatalf("%d delivered through a cut path", during-before)
	}
	c.Proxies["org-2"].Resume()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	a := settle(t, c)
	if got := requireFinal(ctx, t, c); got[govchain.PacketState_PACKET_CONFIRMED] != a.Sent {
		t.Fatalf("final states on the governance chain: %v, want all %d confirmed", got, a.Sent)
	}
	t.Logf("partition healed: %+v", a)
}
