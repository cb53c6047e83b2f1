package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// registry is a static governance view made of real records and keys.
type registry map[string]*govchain.Pipe

func (r registry) Pipe(id string) (*govchain.Pipe, bool) { p, ok := r[id]; return p, ok }

// Revoked: the static view records no account, so none is revoked
// (revoked source accounts are checked in mesh and the relay's
// TestHostileInputs).
func (r registry) Revoked(crypto.Address) bool { return false }

func pipe(id, srcRelay, dstRelay string, app crypto.Signer, status govchain.PipeStatus) *govchain.Pipe {
	a := crypto.SignerAddress(app)
	return &govchain.Pipe{Id: id, Status: status, Limits: &govchain.PipeLimits{MaxPayload: 1024},
		Source:      &govchain.PipeEndpoint{Org: "org-a", RelayId: srcRelay, Account: a[:], Suite: "ed25519", PublicKey: app.PublicKey()},
		Destination: &govchain.PipeEndpoint{Org: "org-b", RelayId: dstRelay}}
}

func packet(t testing.TB, s crypto.Signer, pipeID string, seq uint64, payload string) *amdp.Packet {
	t.Helper()
	a := crypto.SignerAddress(s)
	p := &amdp.Packet{PipeId: pipeID, Sequence: seq, Operation: amdp.OpWrite, Payload: []byte(payload),
		TimeoutUnixMs: uint64(time.Now().Add(time.Hour).UnixMilli()), Credential: &amdp.Credential{Signer: a[:], Suite: "ed25519"}}
	if err := amdp.SignPacket(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckerTable(t *testing.T) {
	app, other := crypto.DevSigner("app"), crypto.DevSigner("other")
	reg := registry{
		"p":         pipe("p", "relay-a", "relay-b", app, govchain.PipeStatus_PIPE_ACTIVE),
		"proposed":  pipe("proposed", "relay-a", "relay-b", app, govchain.PipeStatus_PIPE_PROPOSED),
		"suspended": pipe("suspended", "relay-a", "relay-b", app, govchain.PipeStatus_PIPE_SUSPENDED),
		"theirs":    pipe("theirs", "relay-x", "relay-b", app, govchain.PipeStatus_PIPE_ACTIVE),
	}
	tampered := packet(t, app, "p", 1, "hello")
	tampered.Payload = []byte("HELLO")
	cases := []struct {
		name string
		p    *amdp.Packet
		want error
	}{
		{"ok", packet(t, app, "p", 1, "x"), nil},
		{"unknown pipe", packet(t, app, "nope", 1, "x"), check.ErrUnknownPipe},
		{"proposed pipe", packet(t, app, "proposed", 1, "x"), check.ErrPipeNotActive},
		{"suspended pipe", packet(t, app, "suspended", 1, "x"), check.ErrPipeNotActive},
		{"other relay's pipe", packet(t, app, "theirs", 1, "x"), check.ErrWrongSource},
		{"wrong signer", packet(t, other, "p", 1, "x"), amdp.ErrBadCredential},
		{"tampered payload", tampered, amdp.ErrBadSignature},
		{"oversized payload", packet(t, app, "p", 1, strings.Repeat("x", 2000)), amdp.ErrPayloadTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChecker("relay-a", reg, 0)
			pp, err := c.resolve(tc.p)
			items := []check.Item{{Packet: tc.p, Pipe: pp, Err: err}}
			check.Signatures(items, nil)
			if err = items[0].Err; err == nil {
				err = c.admit(tc.p, pp)
			} else {
				err = reject(tc.p, err)
			}
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var re *RejectError
			if tc.want != nil && (!errors.As(err, &re) || Reason(err) == "other") {
				t.Fatalf("rejection is not typed: %v", err)
			}
		})
	}

	c := newChecker("relay-a", reg, 0)
	for _, step := range []struct {
		seq  uint64
		want error
	}{{5, nil}, {6, nil}, {6, ErrSequenceReplay}, {3, ErrSequenceReplay}, {9, ErrSequenceGap}, {7, nil}} {
		if err := c.sequence(&amdp.Packet{PipeId: "p", Sequence: step.seq}); !errors.Is(err, step.want) && !(step.want == nil && err == nil) {
			t.Fatalf("seq %d: got %v, want %v", step.seq, err, step.want)
		}
	}
}

func TestBatcherBounds(t *testing.T) {
	b := newBatcher(3, 100)
	var full []*pending
	for i := 0; i < 7; i++ {
		if f := b.add("r1", &amdp.Packet{Sequence: uint64(i)}, 10); f != nil {
			full = append(full, f)
		}
	}
	if f := b.add("r2", &amdp.Packet{}, 60); f != nil {
		t.Fatal("new destination flushed something")
	}
	if f := b.add("r2", &amdp.Packet{}, 60); f == nil || len(f.packets) != 1 {
		t.Fatal("byte bound not applied")
	}
	rest := b.drain()
	if len(full) != 2 || len(full[0].packets) != 3 || len(rest) != 2 || rest[0].to != "r1" || len(rest[0].packets) != 1 {
		t.Fatalf("batches: full %d, rest %v", len(full), rest)
	}
	for i, p := range append(full[0].packets, full[1].packets...) {
		if p.Sequence != uint64(i) {
			t.Fatal("order not kept")
		}
	}
}

// sink is a Sender that acts as a destination relay: it verifies the batch
// seal, applies each packet id once and counts re-sends.
type sink struct {
	mu        sync.Mutex
	applied   map[[32]byte]int
	sends     int
	relayKey  crypto.Signer
	failUntil time.Time
	hold      map[string]chan struct{} // sends to these relays wait until the channel closes
	held      int                      // sends that waited
}

func newSink(relayKey crypto.Signer) *sink {
	return &sink{applied: map[[32]byte]int{}, relayKey: relayKey}
}

func (s *sink) Send(ctx context.Context, to string, b *amdp.Batch) (*amdp.ReceiptBatch, error) {
	if err := amdp.VerifyBatch(b, s.relayKey.Suite(), s.relayKey.PublicKey(), amdp.DefaultLimits()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	wait := s.hold[to]
	if wait != nil {
		s.held++
	}
	s.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Now().Before(s.failUntil) {
		return nil, errors.New("peer unreachable")
	}
	s.sends++
	for _, p := range b.Packets {
		s.applied[p.ID()]++
	}
	return &amdp.ReceiptBatch{}, nil
}

func (s *sink) count() (distinct, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.applied {
		distinct++
		total += n
	}
	return
}

type harness struct {
	t        *testing.T
	cluster  *kfake.Cluster
	prod     *kgo.Client
	reg      registry
	app      crypto.Signer
	relay    crypto.Signer
	sink     *sink
	offences offenceLog
	comp     compLog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "ccgp.events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("ccgp.events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	app, relay := crypto.DevSigner("app-a"), crypto.DevSigner("relay-a")
	h := &harness{t: t, cluster: c, prod: prod, app: app, relay: relay, sink: newSink(relay), reg: registry{}}
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("pipe-%d", i)
		h.reg[id] = pipe(id, "relay-a", fmt.Sprintf("relay-%d", i%2), app, govchain.PipeStatus_PIPE_ACTIVE)
	}
	return h
}

// offenceLog keeps the offence records a shard reports.
type offenceLog struct {
	mu   sync.Mutex
	recs []offence.Record
}

func (l *offenceLog) Report(r offence.Record) { l.mu.Lock(); l.recs = append(l.recs, r); l.mu.Unlock() }

func (l *offenceLog) byReason() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, r := range l.recs {
		out[r.Reason]++
	}
	return out
}

// compLog is a Compensator that keeps what it is handed.
type compLog struct {
	mu       sync.Mutex
	rejected []Rejection
}

func (c *compLog) Rejected(_ context.Context, rs []Rejection) error {
	c.mu.Lock()
	c.rejected = append(c.rejected, rs...)
	c.mu.Unlock()
	return nil
}

func (c *compLog) Undeliverable(context.Context, *amdp.Batch, error) error { return nil }

func (h *harness) produce(recs ...*kgo.Record) {
	h.t.Helper()
	if err := h.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) rec(p *amdp.Packet) *kgo.Record {
	b, err := amdp.EncodePacket(nil, p)
	if err != nil {
		h.t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(p.PipeId), Value: b}
}

func (h *harness) shard(ctx context.Context, onReject func(*amdp.Packet, error)) (*Shard, chan error) {
	h.t.Helper()
	s, err := NewShard(Config{RelayID: "relay-a", Signer: h.relay, Registry: h.reg, Sender: h.sink,
		Brokers: h.cluster.ListenAddrs(), OnReject: onReject, Linger: 2 * time.Millisecond,
		Offences: &h.offences, Comp: &h.comp,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond)}})
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShardRejectsBadInput(t *testing.T) {
	h := newHarness(t)
	h.reg["proposed"] = pipe("proposed", "relay-a", "relay-b", h.app, govchain.PipeStatus_PIPE_PROPOSED)
	h.reg["suspended"] = pipe("suspended", "relay-a", "relay-b", h.app, govchain.PipeStatus_PIPE_SUSPENDED)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	reasons := map[string]int{}
	_, done := h.shard(ctx, func(p *amdp.Packet, err error) {
		mu.Lock()
		reasons[Reason(err)]++
		mu.Unlock()
	})
	t.Cleanup(func() { cancel(); <-done })

	bad := packet(t, h.app, "pipe-0", 2, "x")
	bad.Signature[0] ^= 1
	h.produce(
		h.rec(packet(t, h.app, "pipe-0", 1, "ok-1")),
		h.rec(bad), // bad signature; does not advance the sequence
		h.rec(packet(t, h.app, "pipe-0", 2, "ok-2")),
		h.rec(packet(t, h.app, "pipe-0", 2, "again")), // replay
		h.rec(packet(t, h.app, "pipe-0", 9, "gap")),
		h.rec(packet(t, h.app, "nope", 1, "x")),
		h.rec(packet(t, h.app, "proposed", 1, "x")),
		h.rec(packet(t, h.app, "suspended", 1, "x")),
		h.rec(packet(t, h.app, "pipe-0", 3, strings.Repeat("x", 5000))), // authentic, refused: uses its sequence
		&kgo.Record{Key: []byte("pipe-0"), Value: []byte{0xff, 0xfe, 0x01}},
		h.rec(packet(t, h.app, "pipe-0", 4, "ok-4")),
	)
	waitFor(t, "all records handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range reasons {
			n += c
		}
		d, _ := h.sink.count()
		return n == 8 && d == 3
	})
	want := map[string]int{"bad_signature": 1, "sequence_replay": 1, "sequence_gap": 1, "unknown_pipe": 1, "pipe_not_active": 2, "payload_too_large": 1, "malformed": 1}
	mu.Lock()
	defer mu.Unlock()
	for r, n := range want {
		if reasons[r] != n {
			t.Errorf("reason %s: %d rejections, want %d (all: %v)", r, reasons[r], n, reasons)
		}
	}
	if d, total := h.sink.count(); d != 3 || total != 3 {
		t.Fatalf("delivered %d distinct, %d total; want the 3 good packets once", d, total)
	}
	// Only the packets that name no verified request are offences; the
	// authentic ones their pipe refused went to the compensator instead.
	wantOff := map[string]int{"bad_signature": 1, "sequence_replay": 1, "sequence_gap": 1, "unknown_pipe": 1, "malformed": 1}
	got := h.offences.byReason()
	for r, n := range wantOff {
		if got[r] != n {
			t.Errorf("offences %s: %d, want %d (all: %v)", r, got[r], n, got)
		}
	}
	if len(got) != len(wantOff) {
		t.Errorf("offences by reason %v, want %v", got, wantOff)
	}
	h.comp.mu.Lock()
	defer h.comp.mu.Unlock()
	if len(h.comp.rejected) != 3 {
		t.Errorf("compensator got %d rejections, want the 3 authentic refused packets", len(h.comp.rejected))
	}
}

func TestShardRebalance(t *testing.T) {
	h := newHarness(t)
	const perPipe = 400
	ctx := context.Background()
	ctx1, cancel1 := context.WithCancel(ctx)
	s1, done1 := h.shard(ctx1, nil)
	t.Cleanup(func() { cancel1(); <-done1 })

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // steady traffic on 4 pipes
		defer wg.Done()
		for seq := uint64(1); seq <= perPipe; seq++ {
			var recs []*kgo.Record
			for i := 0; i < 4; i++ {
				recs = append(recs, h.rec(packet(t, h.app, fmt.Sprintf("pipe-%d", i), seq, "payload")))
			}
			h.produce(recs...)
			if seq%50 == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	waitFor(t, "first shard routing", func() bool { return s1.Stats().Routed > 200 })
	ctx2, cancel2 := context.WithCancel(ctx)
	s2, done2 := h.shard(ctx2, nil)
	waitFor(t, "second shard routing", func() bool { return s2.Stats().Routed > 0 })
	cancel1() // the first leaves mid-stream
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	done1 <- nil
	wg.Wait()
	waitFor(t, "every packet delivered", func() bool { d, _ := h.sink.count(); return d == 4*perPipe })
	cancel2()
	<-done2
	if d, total := h.sink.count(); d != 4*perPipe || total != 4*perPipe {
		t.Fatalf("distinct %d total %d, want %d each: lost or sent twice", d, total, 4*perPipe)
	}
	if s1.Stats().Rejected+s2.Stats().Rejected != 0 {
		t.Fatal("a rebalance caused rejections")
	}
}

func TestShardRetriesUnreachablePeer(t *testing.T) {
	h := newHarness(t)
	h.sink.failUntil = time.Now().Add(500 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	s, done := h.shard(ctx, nil)
	t.Cleanup(func() { cancel(); <-done })
	for seq := uint64(1); seq <= 20; seq++ {
		h.produce(h.rec(packet(t, h.app, "pipe-1", seq, "x")))
	}
	waitFor(t, "delivery after the peer returns", func() bool { d, _ := h.sink.count(); return d == 20 })
	if s.Stats().Rejected != 0 {
		t.Fatal("unreachable peer caused rejections")
	}
}

func TestShardShapesToPipeRate(t *testing.T) {
	h := newHarness(t)
	h.reg["pipe-1"].Limits.RatePerSec = 100
	ctx, cancel := context.WithCancel(context.Background())
	s, done := h.shard(ctx, nil)
	t.Cleanup(func() { cancel(); <-done })
	start := time.Now()
	var recs []*kgo.Record
	for seq := uint64(1); seq <= 300; seq++ {
		recs = append(recs, h.rec(packet(t, h.app, "pipe-1", seq, "x")))
	}
	h.produce(recs...)
	waitFor(t, "all routed", func() bool { d, _ := h.sink.count(); return d == 300 })
	// 300 packets at 100/s with a second of burst cannot take less than 2 s;
	// a lower bound, so a slow machine cannot make it fail.
	if el := time.Since(start); el < 1900*time.Millisecond {
		t.Fatalf("300 packets at 100/s routed in %v: not shaped", el)
	}
	if s.Stats().Rejected != 0 {
		t.Fatal("shaping rejected packets")
	}
}

// TestShardPipelineCommitsInOrder holds the first cycle's batch at its
// peer while later cycles are acknowledged: nothing may be committed until
// the first cycle is, or a crash would skip its records.
func TestShardPipelineCommitsInOrder(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.sink.hold = map[string]chan struct{}{"relay-0": release}
	ctx, cancel := context.WithCancel(context.Background())
	_, done := h.shard(ctx, nil)
	t.Cleanup(func() { cancel(); <-done })

	committed := func() int64 {
		t.Helper()
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = "ccgp-router-relay-a"
		g := kmsg.NewOffsetFetchRequestGroup()
		g.Group = req.Group
		req.Groups = append(req.Groups, g)
		resp, err := req.RequestWith(context.Background(), h.prod)
		if err != nil {
			t.Fatal(err)
		}
		topics := resp.Topics // before v8; later versions answer per group
		if len(resp.Groups) > 0 {
			topics = nil
			for _, rt := range resp.Groups[0].Topics {
				for _, p := range rt.Partitions {
					topics = append(topics, kmsg.OffsetFetchResponseTopic{Topic: rt.Topic, Partitions: []kmsg.OffsetFetchResponseTopicPartition{{Partition: p.Partition, Offset: p.Offset}}})
				}
			}
		}
		var sum int64
		for _, tp := range topics {
			for _, p := range tp.Partitions {
				sum += max(p.Offset, 0)
			}
		}
		return sum
	}

	h.produce(h.rec(packet(t, h.app, "pipe-0", 1, "held"))) // to relay-0
	waitFor(t, "the first batch held at its peer", func() bool {
		h.sink.mu.Lock()
		defer h.sink.mu.Unlock()
		return h.sink.held > 0
	})
	for seq := uint64(1); seq <= 3; seq++ { // later cycles, to relay-1
		h.produce(h.rec(packet(t, h.app, "pipe-1", seq, "later")))
		waitFor(t, "a later cycle acknowledged", func() bool { d, _ := h.sink.count(); return d == int(seq) })
	}
	time.Sleep(100 * time.Millisecond) // room for a wrong commit to show
	if n := committed(); n != 0 {
		t.Fatalf("%d records committed while the first cycle is unacknowledged", n)
	}
	close(release)
	waitFor(t, "every cycle committed in order", func() bool { return committed() == 4 })
	if d, total := h.sink.count(); d != 4 || total != 4 {
		t.Fatalf("distinct %d total %d, want 4 each", d, total)
	}
}

// recordingAnchorer is an Anchorer that commits every anchor after a
// short delay and remembers the order in which they were queued.
type recordingAnchorer struct {
	mu   sync.Mutex
	seqs []uint64
}

func (a *recordingAnchorer) QueueOpens(ctx context.Context, opens []*govchain.BatchOpen) (func(context.Context) error, error) {
	a.mu.Lock()
	for _, o := range opens {
		a.seqs = append(a.seqs, o.BatchSeq)
	}
	a.mu.Unlock()
	return func(ctx context.Context) error {
		select {
		case <-time.After(20 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

// TestShardQueuesAnchorsInOrder: with cycles in flight at once, the open
// anchors still reach the governance queue in batch order (a later range
// of a pipe ahead of its earlier one is refused as a gap).
func TestShardQueuesAnchorsInOrder(t *testing.T) {
	h := newHarness(t)
	anch := &recordingAnchorer{}
	s, err := NewShard(Config{RelayID: "relay-a", Signer: h.relay, Registry: h.reg, Sender: h.sink, Anchors: anch,
		Brokers: h.cluster.ListenAddrs(), Linger: time.Millisecond, MaxBatchPackets: 3,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	const perPipe = 60
	for seq := uint64(1); seq <= perPipe; seq++ {
		var recs []*kgo.Record
		for i := 0; i < 4; i++ {
			recs = append(recs, h.rec(packet(t, h.app, fmt.Sprintf("pipe-%d", i), seq, "x")))
		}
		h.produce(recs...)
	}
	waitFor(t, "every packet delivered", func() bool { d, _ := h.sink.count(); return d == 4*perPipe })
	waitFor(t, "every batch acknowledged", func() bool { return s.Stats().Routed == 4*perPipe })
	anch.mu.Lock()
	defer anch.mu.Unlock()
	if uint64(len(anch.seqs)) != s.Stats().Batches {
		t.Fatalf("%d anchors queued for %d batches", len(anch.seqs), s.Stats().Batches)
	}
	for i := 1; i < len(anch.seqs); i++ {
		if anch.seqs[i] != anch.seqs[i-1]+1 {
			t.Fatalf("anchors queued out of batch order at %d: %v", i, anch.seqs)
		}
	}
}
