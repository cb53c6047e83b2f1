package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

func TestFileCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cp := ingest.FileCheckpoint(filepath.Join(dir, "cp"))
	if h, err := cp.Load(); err != nil || h != 0 {
		t.Fatalf("missing file: %d %v", h, err)
	}
	for _, h := range []uint64{42, 43, 1 << 60} {
		if err := cp.Save(h); err != nil {
			t.Fatal(err)
		}
		if got, err := cp.Load(); err != nil || got != h {
			t.Fatalf("load %d %v, want %d", got, err, h)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	if err := os.WriteFile(string(cp), []byte("twelve"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Load(); !errors.Is(err, ingest.ErrCheckpoint) {
		t.Fatalf("malformed: %v", err)
	}
	if err := ingest.FileCheckpoint(filepath.Join(dir, "no", "such", "dir")).Save(1); err == nil {
		t.Fatal("saved into a missing directory")
	}
}

func TestNewListenerValidates(t *testing.T) {
	c := newChain(t, simchain.Options{})
	cl := newProducer(t, newCluster(t))
	cp := ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	for name, f := range map[string]func() (*ingest.Listener, error){
		"nil chain":  func() (*ingest.Listener, error) { return ingest.NewListener(nil, cl, cp) },
		"nil client": func() (*ingest.Listener, error) { return ingest.NewListener(c, nil, cp) },
		"nil cp":     func() (*ingest.Listener, error) { return ingest.NewListener(c, cl, nil) },
		"topic":      func() (*ingest.Listener, error) { return ingest.NewListener(c, cl, cp, ingest.Topic("")) },
		"interval":   func() (*ingest.Listener, error) { return ingest.NewListener(c, cl, cp, ingest.CheckpointEvery(0)) },
		"pending":    func() (*ingest.Listener, error) { return ingest.NewListener(c, cl, cp, ingest.MaxPendingBlocks(-1)) },
	} {
		if _, err := f(); !errors.Is(err, ingest.ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ingest.NewKafkaClient(nil); !errors.Is(err, ingest.ErrConfig) {
		t.Errorf("no brokers: %v", err)
	}
}

// checkRecords checks what Kafka holds against what was sent: every
// request exactly as signed, keyed by its pipe, with the source headers,
// each pipe on one partition and in sequence order there. It returns how
// many times each packet id appears.
func checkRecords(t *testing.T, recs []*kgo.Record, s *sender, chainID string) map[[32]byte]int {
	t.Helper()
	key := crypto.DevSigner("app")
	seen := make(map[[32]byte]int)
	partition := make(map[string]int32)
	last := make(map[string]uint64)
	for _, r := range recs {
		p, err := amdp.DecodePacket(r.Value, amdp.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		want, ok := s.sent[p.ID()]
		if !ok {
			t.Fatalf("record of a packet never sent: %s/%d", p.PipeId, p.Sequence)
		}
		if !proto.Equal(p, want) {
			t.Fatalf("packet %s/%d changed on the way", p.PipeId, p.Sequence)
		}
		if err := amdp.VerifyPacket(p, key.Suite(), key.PublicKey()); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != p.PipeId {
			t.Fatalf("key %q, pipe %q", r.Key, p.PipeId)
		}
		if string(header(t, r, ingest.HeaderChain)) != chainID || len(header(t, r, ingest.HeaderTxHash)) != 32 || height(t, r) == 0 {
			t.Fatalf("headers %v", r.Headers)
		}
		if q, ok := partition[p.PipeId]; ok && q != r.Partition {
			t.Fatalf("pipe %s on partitions %d and %d", p.PipeId, q, r.Partition)
		}
		partition[p.PipeId] = r.Partition
		// In order; a re-produced run starts again at a lower sequence,
		// but only right after a run that went beyond it.
		if seen[p.ID()] == 0 && p.Sequence != last[p.PipeId]+1 {
			t.Fatalf("pipe %s: sequence %d after %d", p.PipeId, p.Sequence, last[p.PipeId])
		}
		if p.Sequence > last[p.PipeId] {
			last[p.PipeId] = p.Sequence
		}
		seen[p.ID()]++
	}
	for id, p := range s.sent {
		if seen[id] == 0 {
			t.Fatalf("request %s/%d never reached Kafka", p.PipeId, p.Sequence)
		}
	}
	return seen
}

func TestListenerProducesEveryRequest(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	c := newChain(t, simchain.Options{})
	m := &metrics{}
	l, err := ingest.NewListener(c, newProducer(t, kc), ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp")),
		ingest.CheckpointEvery(20*time.Millisecond), ingest.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, l)
	s := newSender(c, 4)
	s.send(t, ctx, 60)
	total := s.count()
	waitUntil(t, 15*time.Second, "all produced", func() bool { return l.Stats().Produced == uint64(total) })
	recs := consumeAll(t, kc, total)
	if len(recs) != total {
		t.Fatalf("%d records for %d requests", len(recs), total)
	}
	checkRecords(t, recs, s, c.ID())
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	st := l.Stats()
	if st.Height == 0 || st.Height != st.Acked {
		t.Fatalf("stats after stop %+v", st)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.records != total || m.height != st.Acked || m.saved != st.Height || m.bad != "" {
		t.Fatalf("metrics %+v, stats %+v", m, st)
	}
}

// metrics checks the calls a listener makes.
type metrics struct {
	mu      sync.Mutex
	height  uint64 // last acked block
	records int
	saved   uint64
	bad     string
}

func (m *metrics) BlockAcked(h uint64, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.height != 0 && h != m.height+1 {
		m.bad = fmt.Sprintf("block %d acked after %d", h, m.height)
	}
	m.height, m.records = h, m.records+n
}

func (m *metrics) Checkpointed(h uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h <= m.saved || h > m.height {
		m.bad = fmt.Sprintf("checkpoint %d after %d, acked %d", h, m.saved, m.height)
	}
	m.saved = h
}

func TestListenerStopsWhileKafkaGone(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	c := newChain(t, simchain.Options{})
	cp := ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	s := newSender(c, 2)
	// The default delivery timeout (30s) outlasts the test: only the
	// drain clock can end this Run.
	l, err := ingest.NewListener(c, newProducer(t, kc), cp, ingest.DrainTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, l)
	s.send(t, ctx, 5)
	waitUntil(t, 15*time.Second, "produced", func() bool { return l.Stats().Produced == 10 })
	kc.Close()
	s.send(t, ctx, 5)
	final := c.Stats().Head
	waitUntil(t, 5*time.Second, "the new requests final", func() bool { return c.Stats().Final >= final })
	time.Sleep(50 * time.Millisecond) // let the listener produce them
	began := time.Now()
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Fatalf("Run took %v to stop", d)
	}
	saved, err := cp.Load()
	if err != nil || saved != l.Stats().Height {
		t.Fatalf("checkpoint %d %v, stats %+v", saved, err, l.Stats())
	}
	kc2 := newCluster(t)
	l2, err := ingest.NewListener(c, newProducer(t, kc2), cp)
	if err != nil {
		t.Fatal(err)
	}
	start(t, l2)
	waitUntil(t, 15*time.Second, "produced to the new Kafka", func() bool { return l2.Stats().Produced >= 10 })
	recs := consumeAll(t, kc2, 10)
	if len(recs) != 10 {
		t.Fatalf("%d records in the new Kafka, want the 10 new requests", len(recs))
	}
	for _, rec := range recs {
		p, err := amdp.DecodePacket(rec.Value, amdp.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		if p.Sequence <= 5 || !proto.Equal(p, s.sent[p.ID()]) {
			t.Fatalf("record %s/%d: acknowledged before, or never sent", p.PipeId, p.Sequence)
		}
	}
}

func TestListenerRestartProducesNothingTwice(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	cl := newProducer(t, kc)
	c := newChain(t, simchain.Options{})
	cp := ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	s := newSender(c, 3)

	l1, err := ingest.NewListener(c, cl, cp)
	if err != nil {
		t.Fatal(err)
	}
	r1 := start(t, l1)
	s.send(t, ctx, 30)
	waitUntil(t, 15*time.Second, "first run produced", func() bool { return l1.Stats().Produced == uint64(s.count()) })
	if err := r1.stop(t); err != nil {
		t.Fatal(err)
	}
	saved, err := cp.Load()
	if err != nil || saved != l1.Stats().Acked {
		t.Fatalf("checkpoint %d %v after a clean stop, acked %d", saved, err, l1.Stats().Acked)
	}

	// Requests made while no listener runs are picked up by the next.
	s.send(t, ctx, 20)
	l2, err := ingest.NewListener(c, cl, cp)
	if err != nil {
		t.Fatal(err)
	}
	start(t, l2)
	waitUntil(t, 15*time.Second, "second run produced", func() bool {
		return l1.Stats().Produced+l2.Stats().Produced >= uint64(s.count())
	})
	recs := consumeAll(t, kc, s.count())
	for id, n := range checkRecords(t, recs, s, c.ID()) {
		if n != 1 {
			t.Fatalf("packet %x produced %d times after a clean restart", id, n)
		}
	}
	if len(recs) != s.count() {
		t.Fatalf("%d records for %d requests", len(recs), s.count())
	}
}

func TestListenerCrashBeforeCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	cl := newProducer(t, kc)
	c := newChain(t, simchain.Options{})
	s := newSender(c, 3)
	s.send(t, ctx, 20)
	// Find the first block with a request: the failing Save will be at or
	// after it, so the first run will have produced it unsaved.
	stream, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var first uint64
	for b := range stream {
		if len(b.Events) > 0 {
			first = b.Height
			break
		}
	}
	cp := ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	flaky := &flakyCheckpoint{FileCheckpoint: cp, failFrom: first}

	l1, err := ingest.NewListener(c, cl, flaky, ingest.CheckpointEvery(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r1 := start(t, l1)
	err = r1.wait(t, 15*time.Second)
	if !errors.Is(err, ingest.ErrCheckpoint) || !errors.Is(err, errFlaky) {
		t.Fatalf("run with a failing checkpoint: %v", err)
	}
	saved, err := cp.Load()
	if err != nil || saved >= first {
		t.Fatalf("checkpoint %d (%v), first request at %d", saved, err, first)
	}

	s.send(t, ctx, 10)
	l2, err := ingest.NewListener(c, cl, cp)
	if err != nil {
		t.Fatal(err)
	}
	start(t, l2)
	waitUntil(t, 15*time.Second, "second run produced", func() bool {
		return l2.Stats().Produced >= uint64(s.count())
	})
	// Kafka may hold more than the listeners counted: records of the
	// failed run that were in flight when it stopped are cancelled (and
	// not checkpointed) but may have landed.
	recs := consumeAll(t, kc, int(l1.Stats().Produced+l2.Stats().Produced))
	seen := checkRecords(t, recs, s, c.ID())
	dups := 0
	for _, r := range recs {
		p, _ := amdp.DecodePacket(r.Value, amdp.DefaultLimits())
		if seen[p.ID()] > 1 {
			dups++
			if h := height(t, r); h <= saved {
				t.Fatalf("packet at height %d produced again, checkpoint %d", h, saved)
			}
		}
	}
	if dups == 0 {
		t.Fatal("the crash re-produced nothing: the test did not test")
	}
}

func TestListenerKafkaGone(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	cl := newProducer(t, kc, kgo.RecordDeliveryTimeout(time.Second), kgo.RetryTimeout(time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }), kgo.MetadataMinAge(100*time.Millisecond))
	c := newChain(t, simchain.Options{})
	cp := ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	s := newSender(c, 2)
	l, err := ingest.NewListener(c, cl, cp, ingest.CheckpointEvery(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, l)
	s.send(t, ctx, 10)
	waitUntil(t, 15*time.Second, "produced", func() bool { return l.Stats().Produced == uint64(s.count()) })
	before := l.Stats()
	waitUntil(t, 5*time.Second, "checkpointed", func() bool { return l.Stats().Height > before.Acked })

	kc.Close()
	old := make(map[[32]byte]bool)
	for id := range s.sent {
		old[id] = true
	}
	s.send(t, ctx, 5)
	err = r.wait(t, 20*time.Second)
	if !errors.Is(err, ingest.ErrProduce) {
		t.Fatalf("run against a closed Kafka: %v", err)
	}
	saved, err := cp.Load()
	if err != nil || saved != l.Stats().Height || saved != l.Stats().Acked {
		t.Fatalf("checkpoint %d (%v), stats %+v", saved, err, l.Stats())
	}

	// A new Kafka gets everything after the checkpoint: the new requests,
	// and none of the acknowledged ones.
	kc2 := newCluster(t)
	l2, err := ingest.NewListener(c, newProducer(t, kc2), cp)
	if err != nil {
		t.Fatal(err)
	}
	start(t, l2)
	waitUntil(t, 15*time.Second, "produced to the new Kafka", func() bool { return l2.Stats().Produced >= 10 })
	recs := consumeAll(t, kc2, 10)
	if len(recs) != 10 {
		t.Fatalf("%d records in the new Kafka, want the 10 new requests", len(recs))
	}
	for _, r := range recs {
		p, err := amdp.DecodePacket(r.Value, amdp.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		if old[p.ID()] || !proto.Equal(p, s.sent[p.ID()]) {
			t.Fatalf("record %s/%d: old %v", p.PipeId, p.Sequence, old[p.ID()])
		}
	}
}

func TestListenerChainClosed(t *testing.T) {
	kc := newCluster(t)
	c := newChain(t, simchain.Options{})
	l, err := ingest.NewListener(c, newProducer(t, kc), ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp")))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, l)
	waitUntil(t, 5*time.Second, "a block", func() bool { return l.Stats().Acked > 0 })
	c.Close()
	if err := r.wait(t, 10*time.Second); !errors.Is(err, ingest.ErrStreamEnded) || !errors.Is(err, simchain.ErrClosed) {
		t.Fatalf("run after the chain closed: %v", err)
	}
	if err := l.Run(context.Background()); !errors.Is(err, ingest.ErrStreamEnded) {
		t.Fatalf("run on a closed chain: %v", err)
	}
}

func TestListenerRunsOnce(t *testing.T) {
	c := newChain(t, simchain.Options{})
	l, err := ingest.NewListener(c, newProducer(t, newCluster(t)), ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp")))
	if err != nil {
		t.Fatal(err)
	}
	start(t, l)
	waitUntil(t, 5*time.Second, "running", func() bool { return l.Stats().Acked > 0 })
	if err := l.Run(context.Background()); !errors.Is(err, ingest.ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
}
