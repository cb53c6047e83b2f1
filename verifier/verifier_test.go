package verifier

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cmtbytes "github.com/cometbft/cometbft/libs/bytes"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/govchain/govchaintest"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Keys shared by the tests: deterministic, so failures reproduce.
var (
	appKey = crypto.DevSigner("verifier-test-app")
	relayA = crypto.DevSigner("verifier-test-relay-a")
	relayB = crypto.DevSigner("verifier-test-relay-b")
)

// fixture is one batch from relay-a to relay-b, the receipts relay-b
// returned, relay-b's committed receipt anchor, and what the destination
// chain recorded. As built, every receipt agrees with both.
type fixture struct {
	t      *testing.T
	b      *amdp.Batch
	rb     *amdp.ReceiptBatch
	anchor *govchain.BatchAnchor
	chain  map[[32]byte]subchain.Delivery
}

var refs = []struct {
	pipe string
	seq  uint64
}{{"pipe-a", 1}, {"pipe-a", 2}, {"pipe-b", 7}}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, chain: map[[32]byte]subchain.Delivery{}}
	f.b = &amdp.Batch{Header: &amdp.BatchHeader{FromRelay: "relay-a", ToRelay: "relay-b", BatchSeq: 5, CreatedUnixMs: 1_700_000_000_000}}
	f.rb = &amdp.ReceiptBatch{Header: &amdp.ReceiptBatchHeader{FromRelay: "relay-b", ToRelay: "relay-a", BatchSeq: 5}}
	for i, r := range refs {
		p := &amdp.Packet{PipeId: r.pipe, Sequence: r.seq, Operation: amdp.OpWrite,
			Payload: fmt.Appendf(nil, `{"transfer":%d}`, i), TimeoutHeight: 1000, TimeoutUnixMs: 1_700_000_060_000}
		if err := amdp.SignPacket(p, appKey); err != nil {
			t.Fatal(err)
		}
		f.b.Packets = append(f.b.Packets, p)
		id := p.ID()
		d := subchain.Delivery{PacketID: id, Status: amdp.StatusDelivered, TxHash: fmt.Appendf(nil, "tx-%d", i),
			Height: 100 + uint64(i), ResultHash: sha256.Sum256(p.Payload)}
		f.chain[id] = d
		f.rb.Receipts = append(f.rb.Receipts, &amdp.Receipt{PacketId: id[:], Status: amdp.StatusDelivered,
			DestTxHash: d.TxHash, DestHeight: d.Height, ResultHash: d.ResultHash[:]})
	}
	if err := amdp.SealBatch(f.b, relayA); err != nil {
		t.Fatal(err)
	}
	f.seal()
	return f
}

// seal (re)signs the receipts and anchors them as the governance chain
// would: the anchor is what relay-b committed for these very receipts.
func (f *fixture) seal() {
	f.t.Helper()
	if err := amdp.SealReceiptBatch(f.rb, relayB); err != nil {
		f.t.Fatal(err)
	}
	statuses := make([]byte, len(f.rb.Receipts))
	for i, r := range f.rb.Receipts {
		statuses[i] = byte(r.Status)
	}
	h := f.b.Header
	f.anchor = &govchain.BatchAnchor{FromRelay: h.FromRelay, ToRelay: h.ToRelay, BatchSeq: h.BatchSeq,
		MerkleRoot: h.MerkleRoot, Count: h.PacketCount, OpenedHeight: 10,
		ReceiptRoot: f.rb.Header.MerkleRoot, Statuses: statuses, ReceiptedHeight: 12}
}

func (f *fixture) id(i int) [32]byte { return f.b.Packets[i].ID() }

// refuse makes receipt i a refusal by the destination (relay-b signs and
// anchors it as such).
// refuse makes receipt i a refusal that the destination chain holds too.
func (f *fixture) refuse(i int, st amdp.ReceiptStatus) {
	r := f.rb.Receipts[i]
	r.Status, r.DestTxHash, r.DestHeight, r.ResultHash, r.Reason = st, []byte("refusal-tx"), 42, nil, "contract reverted"
	f.chain[f.id(i)] = subchain.Delivery{PacketID: f.id(i), Status: st, TxHash: []byte("refusal-tx"), Height: 42, Reason: "contract reverted"}
	f.seal()
}

func TestCheck(t *testing.T) {
	const (
		otherReceipts = "the receipt anchor commits to other receipts than the relay returned"
		count         = "receipts, anchor statuses and packets differ in number"
	)
	all := func(reason string) []Mismatch {
		var out []Mismatch
		for _, r := range refs {
			out = append(out, Mismatch{r.pipe, r.seq, reason})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		edit func(f *fixture)
		want []Mismatch
	}{
		{
			name: "all delivered and on chain",
			edit: func(f *fixture) {},
		},
		{
			name: "anchor root differs: every packet",
			edit: func(f *fixture) { f.anchor.ReceiptRoot = sha256.New().Sum(nil) },
			want: all(otherReceipts),
		},
		{
			name: "anchor missing its receipt root: every packet",
			edit: func(f *fixture) { f.anchor.ReceiptRoot = nil },
			want: all(otherReceipts),
		},
		{
			name: "receipts re-signed after relay-b anchored others: every packet",
			edit: func(f *fixture) {
				anchored := f.anchor
				f.rb.Receipts[1].DestHeight++
				f.seal()
				f.anchor = anchored
			},
			want: all(otherReceipts),
		},
		{
			name: "anchor lacks a status: every packet",
			edit: func(f *fixture) { f.anchor.Statuses = f.anchor.Statuses[:2] },
			want: all(count),
		},
		{
			name: "fewer receipts than packets: every packet",
			edit: func(f *fixture) {
				f.rb.Receipts = f.rb.Receipts[:2]
				f.seal()
			},
			want: all(count),
		},
		{
			name: "anchored status differs from the receipt",
			edit: func(f *fixture) { f.anchor.Statuses[1] = byte(amdp.StatusFailed) },
			want: []Mismatch{{"pipe-a", 2, "anchored status differs from the receipt"}},
		},
		{
			name: "anchor says delivered, receipt says refused",
			edit: func(f *fixture) {
				f.refuse(2, amdp.StatusFailed)
				f.anchor.Statuses[2] = byte(amdp.StatusDelivered)
			},
			want: []Mismatch{{"pipe-b", 7, "anchored status differs from the receipt"}},
		},
		{
			name: "receipt for another packet",
			edit: func(f *fixture) {
				other := amdp.PacketID("pipe-z", 9)
				f.rb.Receipts[1].PacketId = other[:]
				f.seal()
			},
			want: []Mismatch{{"pipe-a", 2, "receipt is for another packet"}},
		},
		{
			name: "receipts in another order than the packets",
			edit: func(f *fixture) {
				f.rb.Receipts[0], f.rb.Receipts[2] = f.rb.Receipts[2], f.rb.Receipts[0]
				f.seal()
			},
			want: []Mismatch{{"pipe-a", 1, "receipt is for another packet"}, {"pipe-b", 7, "receipt is for another packet"}},
		},
		{
			name: "destination chain lacks the delivery",
			edit: func(f *fixture) { delete(f.chain, f.id(2)) },
			want: []Mismatch{{"pipe-b", 7, "destination chain has no such delivery"}},
		},
		{
			name: "destination chain recorded a refusal",
			edit: func(f *fixture) {
				f.chain[f.id(0)] = subchain.Delivery{PacketID: f.id(0), Status: amdp.StatusFailed, Reason: "out of gas"}
			},
			want: []Mismatch{{"pipe-a", 1, "destination chain recorded a refusal"}},
		},
		{
			name: "destination chain recorded a rejection",
			edit: func(f *fixture) {
				d := f.chain[f.id(1)]
				d.Status = amdp.StatusRejected
				f.chain[f.id(1)] = d
			},
			want: []Mismatch{{"pipe-a", 2, "destination chain recorded a refusal"}},
		},
		{
			name: "tx hash differs",
			edit: func(f *fixture) {
				d := f.chain[f.id(1)]
				d.TxHash = []byte("tx-forged")
				f.chain[f.id(1)] = d
			},
			want: []Mismatch{{"pipe-a", 2, "destination tx differs: chain has height 101"}},
		},
		{
			name: "height differs",
			edit: func(f *fixture) {
				d := f.chain[f.id(2)]
				d.Height = 999
				f.chain[f.id(2)] = d
			},
			want: []Mismatch{{"pipe-b", 7, "destination tx differs: chain has height 999"}},
		},
		{
			name: "result hash differs",
			edit: func(f *fixture) {
				d := f.chain[f.id(0)]
				d.ResultHash[31] ^= 1
				f.chain[f.id(0)] = d
			},
			want: []Mismatch{{"pipe-a", 1, "result hash differs from the chain's"}},
		},
		{
			name: "several mismatches, in packet order",
			edit: func(f *fixture) {
				delete(f.chain, f.id(2))
				d := f.chain[f.id(0)]
				d.ResultHash[0] ^= 1
				f.chain[f.id(0)] = d
			},
			want: []Mismatch{
				{"pipe-a", 1, "result hash differs from the chain's"},
				{"pipe-b", 7, "destination chain has no such delivery"},
			},
		},
		{
			name: "a refusal the destination chain holds is proven",
			edit: func(f *fixture) { f.refuse(1, amdp.StatusRejected) },
		},
		{
			name: "a timeout the destination chain holds is proven",
			edit: func(f *fixture) { f.refuse(0, amdp.StatusTimedOut) },
		},
		{
			name: "a refusal the destination chain does not hold",
			edit: func(f *fixture) {
				f.refuse(1, amdp.StatusRejected)
				delete(f.chain, f.id(1))
			},
			want: []Mismatch{{"pipe-a", 2, "destination chain holds no record of the refusal"}},
		},
		{
			name: "a refusal of a packet the destination chain executed",
			edit: func(f *fixture) {
				d := f.chain[f.id(1)]
				f.refuse(1, amdp.StatusFailed)
				f.chain[f.id(1)] = d
			},
			want: []Mismatch{{"pipe-a", 2, fmt.Sprintf("destination chain executed the packet the receipt refuses (height %d)", 101)}},
		},
		{
			name: "a refusal at another tx than the chain's",
			edit: func(f *fixture) {
				f.refuse(1, amdp.StatusRejected)
				d := f.chain[f.id(1)]
				d.TxHash = []byte("other-tx")
				f.chain[f.id(1)] = d
			},
			want: []Mismatch{{"pipe-a", 2, "destination chain's refusal differs from the receipt: chain has height 42"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.edit(f)
			var looked [][32]byte
			find := func(id [32]byte) (subchain.Delivery, bool) {
				looked = append(looked, id)
				d, ok := f.chain[id]
				return d, ok
			}
			got := Check(f.b, f.rb, f.anchor, find)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Check:\n got %+v\nwant %+v", got, tc.want)
			}
			// The chain is asked only about packets of the batch.
			for _, id := range looked {
				if !slices.ContainsFunc(f.b.Packets, func(p *amdp.Packet) bool { return p.ID() == id }) {
					t.Errorf("looked up %x, not in the batch", id[:4])
				}
			}
		})
	}
}

// anchorSource serves the fixture's anchor as the governance chain would,
// after failing the first proofErrs reads with a proof error; never: the
// anchor is never committed.
type anchorSource struct {
	anchor    *govchain.BatchAnchor
	proofErrs atomic.Int32
	never     bool
}

func (a *anchorSource) Get(_ context.Context, key []byte, m proto.Message) (int64, error) {
	switch {
	case a.never:
		return 0, fmt.Errorf("read %x: %w", key, govchain.ErrNoRecord)
	case a.proofErrs.Add(-1) >= 0:
		return 0, fmt.Errorf("read %x: %w", key, govchain.ErrProof)
	}
	proto.Merge(m, a.anchor)
	return 12, nil
}

// flakyChain is the fixture's destination chain, failing its first fails
// lookups.
type flakyChain struct {
	f     *fixture
	fails atomic.Int32
}

var errChainDown = errors.New("destination chain: connection refused")

func (c *flakyChain) FindDelivery(_ context.Context, id [32]byte) (subchain.Delivery, bool, error) {
	if c.fails.Add(-1) >= 0 {
		return subchain.Delivery{}, false, errChainDown
	}
	d, ok := c.f.chain[id]
	return d, ok, nil
}

// outcomes records what the verifier asked governance to record.
type outcomes struct {
	confirms   chan *govchain.BatchRef
	exceptions chan *govchain.MsgTxException
	settle     bool // report each confirmation committed at once
}

func (o *outcomes) Confirm(_ context.Context, ref *govchain.BatchRef, _ []*govchain.PacketRef, settled func()) error {
	o.confirms <- ref
	if o.settle {
		settled()
	}
	return nil
}
func (o *outcomes) Exception(_ context.Context, m *govchain.MsgTxException) error {
	o.exceptions <- m
	return nil
}

// TestVerifierRetriesThenManual: a check that fails for want of evidence
// (a proof error, an anchor that never commits, a destination chain that
// does not answer) is retried with backoff; one that recovers confirms
// the batch, one that does not sends every packet of the batch to MANUAL
// with the reason. Nothing ends neither confirmed nor with a person.
func TestVerifierRetriesThenManual(t *testing.T) {
	const attempts = 3
	for _, tc := range []struct {
		name       string
		proofErrs  int32
		never      bool
		chainFails int32
		// wantReason: "" means confirmed; otherwise the MANUAL reason holds it.
		wantReason  string
		wantRetried uint64
	}{
		{name: "proof error once, then proven", proofErrs: 1, wantRetried: 1},
		{name: "proof error every time", proofErrs: 1 << 20, wantReason: "proof", wantRetried: attempts - 1},
		{name: "anchor never commits", never: true, wantReason: "receipt anchor of batch relay-a/5", wantRetried: attempts - 1},
		{name: "destination chain down for a while", chainFails: 2, wantRetried: 2},
		{name: "destination chain down", chainFails: 1 << 20, wantReason: errChainDown.Error(), wantRetried: attempts - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			src := &anchorSource{anchor: f.anchor, never: tc.never}
			src.proofErrs.Store(tc.proofErrs)
			chain := &flakyChain{f: f}
			chain.fails.Store(tc.chainFails)
			out := &outcomes{confirms: make(chan *govchain.BatchRef, 4), exceptions: make(chan *govchain.MsgTxException, 4)}
			v, err := New(Config{Gov: src, Recorder: out, Workers: 1, Attempts: attempts, Backoff: 5 * time.Millisecond,
				AnchorTimeout: 100 * time.Millisecond,
				Destination:   func(string) (Finder, bool) { return chain, true }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			done := make(chan struct{})
			go func() { defer close(done); v.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			if err := v.Enqueue(ctx, f.b, f.rb); err != nil {
				t.Fatal(err)
			}
			select {
			case ref := <-out.confirms:
				if tc.wantReason != "" {
					t.Fatalf("batch %d confirmed, want MANUAL (%q)", ref.BatchSeq, tc.wantReason)
				}
			case m := <-out.exceptions:
				if tc.wantReason == "" {
					t.Fatalf("MANUAL %q, want the batch confirmed", m.Reason)
				}
				if m.State != govchain.PacketState_PACKET_MANUAL || !strings.Contains(m.Reason, tc.wantReason) {
					t.Errorf("exception %v %q, want MANUAL naming %q", m.State, m.Reason, tc.wantReason)
				}
				var got []string
				for _, r := range m.Packets {
					got = append(got, fmt.Sprintf("%s/%d", r.Pipe, r.Seq))
				}
				if want := []string{"pipe-a/1", "pipe-a/2", "pipe-b/7"}; !slices.Equal(got, want) {
					t.Errorf("MANUAL packets %v, want the whole batch %v", got, want)
				}
			case <-ctx.Done():
				t.Fatal("batch neither confirmed nor sent to MANUAL")
			}
			s := v.Stats()
			wantGaveUp := uint64(0)
			if tc.wantReason != "" {
				wantGaveUp = 1
			}
			if s.Retried != tc.wantRetried || s.GaveUp != wantGaveUp {
				t.Errorf("retried %d, gave up %d; want %d, %d", s.Retried, s.GaveUp, tc.wantRetried, wantGaveUp)
			}
		})
	}
}

// TestVerifierManualOnRealNode runs the give-up paths against an
// in-process governance node: an anchor the chain never commits, and a
// node that forges its answer (the proof then fails). Either way the
// batch's packets go to MANUAL with the reason.
func TestVerifierManualOnRealNode(t *testing.T) {
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: t.TempDir(), ChainID: "ccgp-verifier-test", Validators: 1,
		BlockInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := govchain.StartNode(context.Background(), tn.Nodes[0].Home, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Stop() })
	root, err := ln.TrustRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	for _, tc := range []struct {
		name   string
		tamper func(*govchaintest.Tamper)
		want   string
	}{
		{"anchor never commits", func(*govchaintest.Tamper) {}, "receipt anchor of batch relay-a/5"},
		{"node forges the anchor", func(tp *govchaintest.Tamper) {
			tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
				res.Response.Value = []byte("forged anchor")
			})
		}, govchain.ErrProof.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := govchaintest.NewTamper(ln.RPC())
			gov, err := govchain.NewClient(ctx, tp, govchain.WithTrustRoot(root))
			if err != nil {
				t.Fatal(err)
			}
			if err := gov.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			tc.tamper(tp)
			f := newFixture(t)
			out := &outcomes{confirms: make(chan *govchain.BatchRef, 1), exceptions: make(chan *govchain.MsgTxException, 1)}
			v, err := New(Config{Gov: gov, Recorder: out, Workers: 1, Attempts: 2, Backoff: 10 * time.Millisecond,
				AnchorTimeout: 300 * time.Millisecond,
				Destination:   func(string) (Finder, bool) { return &flakyChain{f: f}, true }})
			if err != nil {
				t.Fatal(err)
			}
			rctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); v.Run(rctx) }()
			t.Cleanup(func() { stop(); <-done })
			if err := v.Enqueue(rctx, f.b, f.rb); err != nil {
				t.Fatal(err)
			}
			select {
			case ref := <-out.confirms:
				t.Fatalf("batch %d confirmed without its anchor", ref.BatchSeq)
			case m := <-out.exceptions:
				if m.State != govchain.PacketState_PACKET_MANUAL || len(m.Packets) != len(refs) || !strings.Contains(m.Reason, tc.want) {
					t.Fatalf("exception %v %q for %d packets, want MANUAL naming %q for %d", m.State, m.Reason, len(m.Packets), tc.want, len(refs))
				}
				t.Logf("MANUAL: %s", m.Reason)
			case <-ctx.Done():
				t.Fatal("batch neither confirmed nor sent to MANUAL")
			}
		})
	}
}

// TestVerifierBacklogRestart: a batch taken by a verifier that stops
// before its confirmation commits (a relay killed after committing the
// batch's offsets) is checked again by the next verifier on the same
// directory; a settled batch is not; a restored batch that governance
// already records confirmed leaves the backlog without a second
// confirmation; a corrupt record is counted and kept.
func TestVerifierBacklogRestart(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t)
	src := &anchorSource{anchor: f.anchor}
	chain := &flakyChain{f: f}
	// run starts a verifier on dir, lets it work until want confirmations
	// came (or, with want 0, until its backlog is read and checked), and
	// stops it.
	run := func(settle bool, want int, enqueue bool) Stats {
		t.Helper()
		out := &outcomes{confirms: make(chan *govchain.BatchRef, 4), exceptions: make(chan *govchain.MsgTxException, 4), settle: settle}
		v, err := New(Config{Gov: src, Recorder: out, Workers: 1, Dir: dir,
			Destination: func(string) (Finder, bool) { return chain, true }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := make(chan struct{})
		go func() { defer close(done); v.Run(ctx) }()
		if enqueue {
			if err := v.Enqueue(ctx, f.b, f.rb); err != nil {
				t.Fatal(err)
			}
		}
		for range want {
			select {
			case <-out.confirms:
			case <-ctx.Done():
				t.Fatal("no confirmation")
			}
		}
		if want == 0 {
			// Nothing to wait for but the check of the restored batch:
			// it reads the anchor once.
			time.Sleep(200 * time.Millisecond)
			select {
			case ref := <-out.confirms:
				t.Fatalf("batch %d confirmed again", ref.BatchSeq)
			default:
			}
		}
		cancel()
		<-done
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		return v.Stats()
	}
	if s := run(false, 1, true); s.Restored != 0 {
		t.Fatalf("first start restored %d", s.Restored)
	}
	// The confirmation was queued, never committed: checked again.
	if s := run(true, 1, false); s.Restored != 1 || s.Confirmed != 1 {
		t.Fatalf("after the stop: restored %d, confirmed %d; want 1, 1", s.Restored, s.Confirmed)
	}
	if s := run(false, 0, false); s.Restored != 0 {
		t.Fatalf("a settled batch restored again (%d)", s.Restored)
	}
	// Queued, not settled; meanwhile governance committed it.
	run(false, 1, true)
	src.anchor.ConfirmedHeight = 13
	if s := run(false, 0, false); s.Restored != 1 || s.Confirmed != 0 {
		t.Fatalf("a batch confirmed on the chain: restored %d, confirmed %d; want 1, 0", s.Restored, s.Confirmed)
	}
	if s := run(false, 0, false); s.Restored != 0 {
		t.Fatalf("a batch found confirmed stays in the backlog (%d)", s.Restored)
	}
	// A record that does not decode.
	q, err := openBacklog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := q.db.Set(backlogKey(77), []byte("\x05garbage"), nil); err != nil {
		t.Fatal(err)
	}
	q.close()
	if s := run(false, 0, false); s.Corrupt != 1 || s.Restored != 0 {
		t.Fatalf("corrupt record: corrupt %d, restored %d; want 1, 0", s.Corrupt, s.Restored)
	}
}
