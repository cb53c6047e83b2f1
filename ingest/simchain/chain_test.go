package simchain

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

func TestBlocksAdvanceAtInterval(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{})
	start := time.Now()
	waitUntil(t, 5*time.Second, "head 10", func() bool { return c.Stats().Head >= 10 })
	elapsed := time.Since(start)
	// Blocks come no faster than the interval (one may be due at once).
	if h := c.Stats().Head; h > uint64(elapsed/testInterval)+2 {
		t.Fatalf("head %d after %v at %v per block", h, elapsed, testInterval)
	}
	// Empty blocks are chained by hash like any other.
	for h := uint64(2); h <= 10; h++ {
		prev, _, _, err := decodeBlock(mustGet(t, c, blockKey(h)))
		if err != nil {
			t.Fatal(err)
		}
		_, hash, _, err := decodeBlock(mustGet(t, c, blockKey(h-1)))
		if err != nil {
			t.Fatal(err)
		}
		if prev != hash {
			t.Fatalf("block %d: prev %x, block %d hash %x", h, prev, h-1, hash)
		}
	}
}

func mustGet(t *testing.T, c *Chain, key []byte) []byte {
	t.Helper()
	v, ok, err := get(c.db, key)
	if err != nil || !ok {
		t.Fatalf("get %x: %v %v", key, ok, err)
	}
	return v
}

func TestBlocksRespectFinality(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{FinalityDepth: 3})
	ch, err := c.Blocks(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1)
	collect(t, ch, 5*time.Second, func(bs []subchain.Block) bool {
		if len(bs) == 0 {
			return false
		}
		b := bs[len(bs)-1]
		if b.Height != want {
			t.Fatalf("got height %d, want %d", b.Height, want)
		}
		want++
		if head := c.Stats().Head; head < b.Height+3 {
			t.Fatalf("block %d streamed at head %d, depth 3", b.Height, head)
		}
		if len(b.Hash) != 32 {
			t.Fatalf("block %d hash %x", b.Height, b.Hash)
		}
		return len(bs) == 8
	})

	// Instant finality: a negative depth.
	c0 := openChain(t, t.TempDir(), Options{ID: "sim-0", FinalityDepth: -1})
	waitUntil(t, 5*time.Second, "head 2", func() bool { return c0.Stats().Head >= 2 })
	if s := c0.Stats(); s.Final != s.Head {
		t.Fatalf("depth 0: final %d, head %d", s.Final, s.Head)
	}
}

func TestSubmitSequenceRules(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{BlockInterval: time.Hour}) // everything stays in the mempool
	ctx := testCtx(t)
	if n := c.NextSequence("p"); n != 1 {
		t.Fatalf("next sequence %d, want 1", n)
	}
	if _, err := c.Submit(ctx, signed(t, "p", 1, "a")); err != nil {
		t.Fatal(err)
	}
	// The mempool counts: 1 is taken although no block holds it yet.
	var se *SequenceError
	_, err := c.Submit(ctx, signed(t, "p", 1, "again"))
	if !errors.Is(err, ErrSequenceReplay) || !errors.As(err, &se) || se.Got != 1 || se.Want != 2 || se.Pipe != "p" {
		t.Fatalf("replay: %v", err)
	}
	if _, err := c.Submit(ctx, signed(t, "p", 3, "c")); !errors.Is(err, ErrSequenceGap) {
		t.Fatalf("gap: %v", err)
	}
	if _, err := c.Submit(ctx, signed(t, "p", 2, "b")); err != nil {
		t.Fatal(err)
	}
	// Another pipe has its own sequence.
	if _, err := c.Submit(ctx, signed(t, "q", 1, "x")); err != nil {
		t.Fatal(err)
	}
	if n := c.NextSequence("p"); n != 3 {
		t.Fatalf("next sequence %d, want 3", n)
	}
	bad := signed(t, "p", 3, "c")
	bad.TimeoutUnixMs = 0
	if _, err := c.Submit(ctx, bad); !errors.Is(err, ErrInvalidPacket) || !errors.Is(err, amdp.ErrNoTimeout) {
		t.Fatalf("invalid packet: %v", err)
	}
}

func TestSubmitAppearsInBlocks(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{})
	ctx := testCtx(t)
	var sent []*amdp.Packet
	var hashes [][]byte
	for i := 1; i <= 5; i++ {
		p := signed(t, "p", uint64(i), "payload")
		h, err := c.Submit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		sent, hashes = append(sent, p), append(hashes, h)
	}
	ch, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	evs := events(collect(t, ch, 5*time.Second, countEvents(5)))
	for i, ev := range evs {
		if !proto.Equal(ev.Packet, sent[i]) || !bytes.Equal(ev.TxHash, hashes[i]) || ev.Height == 0 {
			t.Fatalf("event %d: %v %x, want %v %x", i, ev.Packet, ev.TxHash, sent[i], hashes[i])
		}
	}
	// Once committed, a used sequence stays used.
	if _, err := c.Submit(ctx, signed(t, "p", 5, "x")); !errors.Is(err, ErrSequenceReplay) {
		t.Fatalf("replay after commit: %v", err)
	}
	if s := c.Stats(); s.Requests != 5 {
		t.Fatalf("requests %d", s.Requests)
	}
}

func TestConcurrentSubmit(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{MaxTxsPerBlock: 50, MempoolSize: 64})
	ctx := testCtx(t)
	const pipes, appsPerPipe, each = 3, 2, 40
	var wg sync.WaitGroup
	for p := range pipes {
		// One App per pipe, used by several goroutines at once.
		a := &App{Chain: c, Signer: crypto.DevSigner("app"), Pipe: pipeName(p)}
		for range appsPerPipe {
			wg.Go(func() {
				for range each {
					if _, err := a.Send(ctx, []byte("hello")); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	const total = pipes * appsPerPipe * each
	ch, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]uint64{}
	for _, ev := range events(collect(t, ch, 10*time.Second, countEvents(total))) {
		p := ev.Packet
		if p.Sequence != next[p.PipeId]+1 {
			t.Fatalf("pipe %s: sequence %d after %d", p.PipeId, p.Sequence, next[p.PipeId])
		}
		next[p.PipeId] = p.Sequence
	}
	for p := range pipes {
		if next[pipeName(p)] != appsPerPipe*each {
			t.Fatalf("pipe %d: %d requests", p, next[pipeName(p)])
		}
	}
}

func TestDeliverCountsDuplicates(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{})
	ctx := testCtx(t)
	p1, p2 := signed(t, "in", 1, "one"), signed(t, "in", 2, "two")
	ds, err := c.Deliver(ctx, []*amdp.Packet{p1, p2, p1}) // a duplicate within one call
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("%d deliveries", len(ds))
	}
	for i, p := range []*amdp.Packet{p1, p2, p1} {
		d := ds[i]
		if d.PacketID != p.ID() || d.Status != amdp.StatusDelivered || d.ResultHash != ResultHash(p.ID(), p.Payload) || d.Height == 0 || len(d.TxHash) != 32 {
			t.Fatalf("delivery %d: %+v", i, d)
		}
		if c.Stats().Head < d.Height {
			t.Fatalf("delivery %d at height %d above head", i, d.Height)
		}
	}
	if bytes.Equal(ds[0].TxHash, ds[2].TxHash) {
		t.Fatal("two executions share a tx hash")
	}
	// And once more in a later block.
	if _, err := c.Deliver(ctx, []*amdp.Packet{p1}); err != nil {
		t.Fatal(err)
	}
	s := c.Stats()
	if s.Delivered != 2 || s.Duplicates != 2 || s.Rejected != 0 {
		t.Fatalf("stats %+v", s)
	}
	rec, ok, err := c.DeliveryRecord(ctx, p1.ID())
	if err != nil || !ok || rec.Count != 3 || !bytes.Equal(rec.TxHash, ds[0].TxHash) {
		t.Fatalf("record %+v %v %v", rec, ok, err)
	}
	d, ok, err := c.FindDelivery(ctx, p2.ID())
	if err != nil || !ok || d.TxHash == nil || d.ResultHash != ds[1].ResultHash || d.Height != ds[1].Height {
		t.Fatalf("find %+v %v %v", d, ok, err)
	}
	if _, ok, err := c.FindDelivery(ctx, signed(t, "in", 3, "").ID()); ok || err != nil {
		t.Fatalf("find unknown: %v %v", ok, err)
	}
	var n, dups uint64
	if err := c.Deliveries(func(id [32]byte, rec DeliveryRecord) bool {
		n++
		dups += rec.Count - 1
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n != 2 || dups != 2 {
		t.Fatalf("iterated %d records, %d duplicates", n, dups)
	}
}

func TestDeliverRejectPrefix(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{RejectPrefix: []byte("BAD")})
	ctx := testCtx(t)
	ds, err := c.Deliver(ctx, []*amdp.Packet{signed(t, "in", 1, "BAD things"), signed(t, "in", 2, "good")})
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Status != amdp.StatusRejected || ds[0].Reason == "" || ds[0].ResultHash != ([32]byte{}) {
		t.Fatalf("rejected: %+v", ds[0])
	}
	if ds[1].Status != amdp.StatusDelivered {
		t.Fatalf("accepted: %+v", ds[1])
	}
	// Deterministic: the same packet is rejected the same way again.
	again, err := c.Deliver(ctx, []*amdp.Packet{signed(t, "in", 1, "BAD things")})
	if err != nil || again[0].Status != amdp.StatusRejected || again[0].Reason != ds[0].Reason {
		t.Fatalf("again: %+v %v", again, err)
	}
	if s := c.Stats(); s.Rejected != 1 || s.Delivered != 1 || s.Duplicates != 1 {
		t.Fatalf("stats %+v", s)
	}
	// A receipt can carry the outcome.
	r := &amdp.Receipt{PacketId: ds[0].PacketID[:], Status: ds[0].Status, DestTxHash: ds[0].TxHash, DestHeight: ds[0].Height, Reason: ds[0].Reason}
	if err := r.Validate(amdp.DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

func TestRollback(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{})
	ctx := testCtx(t)
	if err := c.Rollback(ctx, "p", 1, "nothing there"); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := c.Submit(ctx, signed(t, "p", 1, "x")); err != nil {
		t.Fatal(err)
	}
	if err := c.Rollback(ctx, "p", 2, "not yet"); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("unknown seq: %v", err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := c.Rollback(ctx, "p", 1, "destination refused"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := c.Rollback(ctx, "p", 1, "again"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.RolledBack != 1 {
		t.Fatalf("rolled back %d, want 1", s.RolledBack)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	c, err := Open(dir, Options{ID: "sim-a", BlockInterval: testInterval})
	if err != nil {
		t.Fatal(err)
	}
	var hashes [][]byte
	for i := 1; i <= 3; i++ {
		h, err := c.Submit(ctx, signed(t, "p", uint64(i), "x"))
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h)
	}
	in := signed(t, "in", 1, "delivered")
	ds, err := c.Deliver(ctx, []*amdp.Packet{in, in})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rollback(ctx, "p", 2, "refused"); err != nil {
		t.Fatal(err)
	}
	// Still in the mempool at Close: committed before Close returns.
	if _, err := c.Submit(ctx, signed(t, "p", 4, "last")); err != nil {
		t.Fatal(err)
	}
	before := c.Stats()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, signed(t, "p", 5, "late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
	if _, err := c.Blocks(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("blocks after close: %v", err)
	}
	if _, err := Open(dir, Options{ID: "sim-b"}); err == nil {
		t.Fatal("reopened under another chain id")
	}

	c = openChain(t, dir, Options{ID: "sim-a"})
	after := c.Stats()
	if after.Head < before.Head || after.Requests != 4 || after.Delivered != 1 || after.Duplicates != 1 || after.RolledBack != 1 {
		t.Fatalf("after restart %+v, before %+v", after, before)
	}
	if n := c.NextSequence("p"); n != 5 {
		t.Fatalf("next sequence %d, want 5", n)
	}
	if err := c.Rollback(ctx, "p", 2, "again"); err != nil || c.Stats().RolledBack != 1 {
		t.Fatalf("rollback after restart: %v %+v", err, c.Stats())
	}
	d, ok, err := c.FindDelivery(ctx, in.ID())
	if err != nil || !ok || !bytes.Equal(d.TxHash, ds[0].TxHash) || d.Height != ds[0].Height {
		t.Fatalf("find after restart: %+v %v %v", d, ok, err)
	}
	// Blocks replays the stored ones, then follows new ones.
	if _, err := c.Submit(ctx, signed(t, "p", 5, "new")); err != nil {
		t.Fatal(err)
	}
	ch, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	bs := collect(t, ch, 5*time.Second, countEvents(5))
	for i, b := range bs {
		if b.Height != uint64(i+1) {
			t.Fatalf("block %d has height %d", i, b.Height)
		}
	}
	evs := events(bs)
	for i, ev := range evs {
		if ev.Packet.Sequence != uint64(i+1) {
			t.Fatalf("event %d: sequence %d", i, ev.Packet.Sequence)
		}
		if i < 3 && !bytes.Equal(ev.TxHash, hashes[i]) {
			t.Fatalf("event %d: tx hash changed", i)
		}
	}
	if evs[4].Height <= before.Head {
		t.Fatalf("new request at height %d, old head %d", evs[4].Height, before.Head)
	}
}

func TestBlocksSeveralStreamsAndClose(t *testing.T) {
	c, err := Open(t.TempDir(), Options{ID: "sim-a", BlockInterval: testInterval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := testCtx(t)
	fast, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := c.Blocks(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Let the slow one fall behind while blocks keep coming.
	a := collect(t, fast, 5*time.Second, func(bs []subchain.Block) bool { return len(bs) == 10 })
	b := collect(t, slow, 5*time.Second, func(bs []subchain.Block) bool { return len(bs) == 10 })
	for i := range a {
		if a[i].Height != b[i].Height || !bytes.Equal(a[i].Hash, b[i].Hash) {
			t.Fatalf("streams differ at %d", i)
		}
	}
	// A stream whose ctx ends closes with Err nil.
	sctx, cancel := context.WithCancel(ctx)
	s, err := c.Blocks(sctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range s {
	}
	if err := c.Err(); err != nil {
		t.Fatalf("after ctx: %v", err)
	}
	// Close ends the others with ErrClosed, even one nobody reads.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range fast {
	}
	for range slow {
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestDeliverAfterCtxEnds(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{BlockInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Deliver(ctx, []*amdp.Packet{signed(t, "in", 1, "x")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deliver: %v", err)
	}
}

func TestAppSendVerifies(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{})
	key := crypto.DevSigner("app-a")
	a := &App{Chain: c, Signer: key, Pipe: "a->b"}
	p, err := a.Send(testCtx(t), []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Sequence != 1 || p.Operation != amdp.OpWrite || p.TimeoutUnixMs == 0 {
		t.Fatalf("packet %v", p)
	}
	if err := amdp.VerifyPacket(p, key.Suite(), key.PublicKey()); err != nil {
		t.Fatal(err)
	}
	addr := crypto.SignerAddress(key)
	if !bytes.Equal(p.Credential.Signer, addr[:]) {
		t.Fatal("credential does not name the app's key")
	}
}

// TestDeliverTimeouts: the chain judges a packet's timeouts by the block it
// would execute in (height and block time), records a TIMED_OUT refusal in
// that block instead of executing, and a timed-out packet never executes
// later; Head with FindDelivery proves non-execution past the timeout.
func TestDeliverTimeouts(t *testing.T) {
	var mu sync.Mutex
	now := time.UnixMilli(1_000_000)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := openChain(t, t.TempDir(), Options{Now: clock})
	ctx := testCtx(t)
	waitUntil(t, 5*time.Second, "a block", func() bool { return c.Stats().Head >= 2 })
	h, err := c.Head(ctx)
	if err != nil || h.TimeUnixMs < 1_000_000 {
		t.Fatalf("head %+v %v", h, err)
	}

	byHeight := signed(t, "in", 1, "late by height")
	byHeight.TimeoutHeight, byHeight.TimeoutUnixMs = h.Height, 0 // the next block is past it
	byTime := signed(t, "in", 2, "late by time")
	byTime.TimeoutUnixMs = 1_000_000 // block time is at least that
	inTime := signed(t, "in", 3, "in time")
	inTime.TimeoutHeight, inTime.TimeoutUnixMs = h.Height+1000, 5_000_000
	ds, err := c.Deliver(ctx, []*amdp.Packet{byHeight, byTime, inTime})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []amdp.ReceiptStatus{amdp.StatusTimedOut, amdp.StatusTimedOut, amdp.StatusDelivered} {
		if ds[i].Status != want || ds[i].Height == 0 || len(ds[i].TxHash) == 0 {
			t.Fatalf("packet %d: %+v, want %v with tx and height", i, ds[i], want)
		}
		d, found, err := c.FindDelivery(ctx, ds[i].PacketID)
		if err != nil || !found || d.Status != want || d.Height != ds[i].Height {
			t.Fatalf("FindDelivery %d: %+v %v %v", i, d, found, err)
		}
	}
	if ds[0].Reason == "" || ds[1].Reason == "" {
		t.Fatal("a timeout refusal carries no reason")
	}
	// A late copy is refused again and changes nothing.
	again, err := c.Deliver(ctx, []*amdp.Packet{byHeight})
	if err != nil || again[0].Status != amdp.StatusTimedOut {
		t.Fatalf("again: %+v %v", again, err)
	}
	if s := c.Stats(); s.TimedOut != 2 || s.Delivered != 1 || s.Duplicates != 0 {
		t.Fatalf("stats %+v", s)
	}
	// Non-execution proof: a packet never delivered is absent at a head
	// past its timeout, and block times only grow even when the clock
	// goes back.
	mu.Lock()
	now = time.UnixMilli(10)
	mu.Unlock()
	h1, _ := c.Head(ctx)
	waitUntil(t, 5*time.Second, "another block", func() bool { return c.Stats().Head > h1.Height })
	h2, _ := c.Head(ctx)
	if h2.TimeUnixMs <= h1.TimeUnixMs {
		t.Fatalf("block time went back: %d then %d", h1.TimeUnixMs, h2.TimeUnixMs)
	}
	if _, found, _ := c.FindDelivery(ctx, signed(t, "in", 9, "never").ID()); found {
		t.Fatal("found a packet never delivered")
	}
}
