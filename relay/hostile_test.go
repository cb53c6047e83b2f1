package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/compensator"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// forge writes packets into org's events topic with an outside Kafka
// client, as anyone who can reach the broker could.
func forge(ctx context.Context, t *testing.T, c *bench.Cluster, org string, ps ...*amdp.Packet) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, p := range ps {
		v, err := amdp.EncodePacket(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: c.EventsTopic(org), Key: []byte(p.PipeId), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// offences reads every record in the offenders topic.
func offences(ctx context.Context, t *testing.T, c *bench.Cluster) []offence.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...), kgo.ConsumeTopics(offence.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []offence.Record
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(pctx)
		if pctx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) {
			rec, err := offence.Decode(r.Value)
			if err != nil {
				t.Errorf("offenders topic: %v", err)
				return
			}
			out = append(out, rec)
		})
	}
}

// state reads a packet's state from the governance chain, proven.
func state(ctx context.Context, t *testing.T, c *bench.Cluster, pipe string, seq uint64) govchain.PacketState {
	t.Helper()
	st, _, err := c.Gov.PacketStatus(ctx, pipe, seq)
	if err != nil {
		t.Fatalf("%s/%d: %v", pipe, seq, err)
	}
	return st.State
}

// TestForgedRecordRollsNothingBack is the first finding of the
// misbehaving-party review: a decodable packet written into a relay's
// events topic by anyone, naming pipe P and sequence K, with a signature
// that does not verify, used to be handed to the compensator, which rolled
// back P/K on the source chain, even when P/K was delivered and
// confirmed, and left a rollback pending for a K not yet sent. Now it is
// dropped at stage 1 and counted against its claimed sender; nothing is
// rolled back, and the real requests with those sequences end delivered.
func TestForgedRecordRollsNothingBack(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const pipe = "pipe-1-2"
	sendOn(ctx, t, c, pipe, 10, func(i int) string { return fmt.Sprintf("real #%d", i) })
	settleWith(t, c)
	waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("%s/3 is %v", pipe, state(ctx, t, c, pipe, 3)) }, func() bool {
		s := state(ctx, t, c, pipe, 3)
		return s == govchain.PacketState_PACKET_DELIVERED || s == govchain.PacketState_PACKET_CONFIRMED
	})

	app := c.Apps[pipe]
	addr := crypto.SignerAddress(app.Signer)
	mk := func(seq uint64, payload string) *amdp.Packet {
		return &amdp.Packet{PipeId: pipe, Sequence: seq, Operation: amdp.OpWrite, Payload: []byte(payload),
			TimeoutUnixMs: uint64(time.Now().Add(time.Minute).UnixMilli()),
			Credential:    &amdp.Credential{Signer: addr[:], Suite: string(app.Signer.Suite())}}
	}
	// A delivered sequence and one not yet sent, each with a signature
	// by another key under the app's credential, and one with the
	// attacker's own credential.
	attacker := crypto.DevSigner("attacker")
	delivered, future, own := mk(3, "forged"), mk(11, "forged ahead"), mk(12, "forged, own key")
	for _, p := range []*amdp.Packet{delivered, future} {
		sig, err := attacker.Sign(amdp.PacketSigningBytes(p))
		if err != nil {
			t.Fatal(err)
		}
		p.Signature = sig
	}
	if err := amdp.SignPacket(own, attacker); err != nil {
		t.Fatal(err)
	}
	forge(ctx, t, c, "org-1", delivered, future, own)

	// The real requests 11.. arrive after the forgeries.
	sendOn(ctx, t, c, pipe, 5, func(i int) string { return fmt.Sprintf("real later #%d", i) })
	a := settleWith(t, c)
	if a.Delivered != 15 || a.Lost != 0 || a.Duplicated != 0 || a.Rejected != 0 {
		t.Fatalf("accounting: %+v", a)
	}
	var offs []offence.Record
	waitUntil(t, 30*time.Second, func() string { return fmt.Sprintf("offences %+v", offs) }, func() bool {
		offs = offences(ctx, t, c)
		return len(offs) >= 3
	})
	byReason := map[string]int{}
	for _, o := range offs {
		if o.Org != "org-1" || o.Stage != offence.StageRouter || o.Pipe != pipe {
			t.Errorf("offence attributed to %s/%s at %s on %s", o.Org, o.Relay, o.Stage, o.Pipe)
		}
		byReason[o.Reason]++
	}
	if byReason["bad_signature"] != 2 || byReason["bad_credential"] != 1 {
		t.Errorf("offences by reason: %v, want 2 bad_signature and 1 bad_credential", byReason)
	}
	if rb := c.Chains["org-1"].Stats().RolledBack; rb != 0 {
		t.Fatalf("%d requests rolled back on the source chain", rb)
	}
	if exs := exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK); len(exs) != 0 {
		t.Fatalf("governance records %d rollbacks", len(exs))
	}
	for _, seq := range []uint64{3, 11, 12} {
		waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("%s/%d is %v", pipe, seq, state(ctx, t, c, pipe, seq)) }, func() bool {
			s := state(ctx, t, c, pipe, seq)
			return s == govchain.PacketState_PACKET_DELIVERED || s == govchain.PacketState_PACKET_CONFIRMED
		})
	}
}

// TestTimeoutRollbackNeverExecutes is the third finding: a packet held up
// at a destination used to be rolled back at its timeout by the source's
// clock and then execute anyway. Now the destination chain refuses a
// packet past its timeout, and the source rolls back only on that chain's
// proof that the packet did not execute by a block past its timeout; a
// late delivery afterwards is refused (TIMED_OUT), never executed.
func TestTimeoutRollbackNeverExecutes(t *testing.T) {
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.SendBudget = time.Second
		o.Compensation = compensator.Policy{MaxAttempts: 100, Base: 200 * time.Millisecond, Max: 400 * time.Millisecond}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	const pipe = "pipe-1-2"
	if err := c.StopRelay("org-2"); err != nil { // the destination is held up; its chain runs on
		t.Fatal(err)
	}
	c.Apps[pipe].Timeout = 3 * time.Second
	var sent []*amdp.Packet
	for i := range 10 {
		p, err := c.Apps[pipe].Send(ctx, fmt.Appendf(nil, "late #%d", i))
		if err != nil {
			t.Fatal(err)
		}
		c.Tracker.Sent(p)
		sent = append(sent, p)
	}
	src, dst := c.Chains["org-1"], c.Chains["org-2"]
	waitUntil(t, 90*time.Second, func() string {
		return fmt.Sprintf("rolled back %d of 10, exceptions %d", src.Stats().RolledBack, len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)))
	}, func() bool {
		return src.Stats().RolledBack == 10 && len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)) == 10
	})
	for _, p := range sent {
		st, _, err := c.Gov.PacketStatus(ctx, pipe, p.Sequence)
		if err != nil || st.State != govchain.PacketState_PACKET_ROLLED_BACK {
			t.Fatalf("%s/%d: %v %v", pipe, p.Sequence, st.GetState(), err)
		}
	}
	// The destination relay comes back; whatever still reaches its chain
	// is refused there, at a block past the timeout.
	if err := c.RestartRelay(ctx, "org-2"); err != nil {
		t.Fatal(err)
	}
	ds, err := dst.Deliver(ctx, sent) // a late copy, as a lagging relay would send it
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if d.Status != amdp.StatusTimedOut {
			t.Fatalf("late delivery of %d: %v", sent[i].Sequence, d.Status)
		}
	}
	if s := dst.Stats(); s.Delivered != 0 || s.TimedOut != 10 {
		t.Fatalf("destination chain: %+v, want nothing executed and 10 timed out", s)
	}
}
