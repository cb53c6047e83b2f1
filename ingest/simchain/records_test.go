package simchain

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// recordsFixture fills one chain as a source (pipes "p" and "pp", a prefix
// of neither's keys of the other: the length prefix keeps them apart) and
// as a destination of pipe "in": seq 1 delivered twice, 2 rejected, 3
// delivered, 5 delivered (4 never).
func recordsFixture(t *testing.T, c *Chain) {
	t.Helper()
	ctx := testCtx(t)
	for _, pipe := range []string{"p", "pp"} {
		for i := uint64(1); i <= 5; i++ {
			if _, err := c.Submit(ctx, signed(t, pipe, i, "x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, seq := range []uint64{2, 4} {
		if err := c.Rollback(ctx, "p", seq, fmt.Sprintf("refused %d", seq)); err != nil {
			t.Fatal(err)
		}
	}
	in := func(seq uint64, payload string) *amdp.Packet { return signed(t, "in", seq, payload) }
	p1 := in(1, "one")
	if _, err := c.Deliver(ctx, []*amdp.Packet{p1, in(2, "BAD"), in(3, "three")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deliver(ctx, []*amdp.Packet{p1, in(5, "five")}); err != nil {
		t.Fatal(err)
	}
}

func seqsOf[T any](t *testing.T, s iter.Seq2[T, error], seq func(T) uint64) []uint64 {
	t.Helper()
	out := []uint64{}
	for r, err := range s {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, seq(r))
	}
	return out
}

// checkRecords is the table both TestRecords and TestRecordsIndexOldStore
// check a fixture chain against.
func checkRecords(t *testing.T, c *Chain) {
	t.Helper()
	ctx := testCtx(t)
	reqSeq := func(r subchain.Request) uint64 { return r.Seq }
	rbSeq := func(r subchain.Rollback) uint64 { return r.Seq }
	exSeq := func(r subchain.Execution) uint64 { return r.Seq }
	const max = ^uint64(0)
	for _, tc := range []struct {
		name string
		got  []uint64
		want []uint64
	}{
		{"requests p all", seqsOf(t, c.Requests(ctx, "p", 0, max), reqSeq), []uint64{1, 2, 3, 4, 5}},
		{"requests p 2..4", seqsOf(t, c.Requests(ctx, "p", 2, 4), reqSeq), []uint64{2, 3, 4}},
		{"requests pp 5..9", seqsOf(t, c.Requests(ctx, "pp", 5, 9), reqSeq), []uint64{5}},
		{"requests empty range", seqsOf(t, c.Requests(ctx, "p", 4, 3), reqSeq), []uint64{}},
		{"requests unknown pipe", seqsOf(t, c.Requests(ctx, "q", 0, max), reqSeq), []uint64{}},
		{"rollbacks p all", seqsOf(t, c.Rollbacks(ctx, "p", 1, max), rbSeq), []uint64{2, 4}},
		{"rollbacks p 3..9", seqsOf(t, c.Rollbacks(ctx, "p", 3, 9), rbSeq), []uint64{4}},
		{"rollbacks pp", seqsOf(t, c.Rollbacks(ctx, "pp", 0, max), rbSeq), []uint64{}},
		{"executions in all", seqsOf(t, c.Executions(ctx, "in", 0, max), exSeq), []uint64{1, 2, 3, 5}},
		{"executions in 2..4", seqsOf(t, c.Executions(ctx, "in", 2, 4), exSeq), []uint64{2, 3}},
		{"executions p (a source pipe)", seqsOf(t, c.Executions(ctx, "p", 0, max), exSeq), []uint64{}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// The fields, against what FindDelivery and the blocks say.
	for r, err := range c.Requests(ctx, "p", 3, 3) {
		if err != nil || r.Pipe != "p" || r.PacketID != amdp.PacketID("p", 3) || r.Height == 0 || len(r.TxHash) != 32 {
			t.Errorf("request p/3: %+v, %v", r, err)
		}
	}
	for r, err := range c.Rollbacks(ctx, "p", 4, 4) {
		if err != nil || r.Reason != "refused 4" || r.Height == 0 || len(r.TxHash) != 32 {
			t.Errorf("rollback p/4: %+v, %v", r, err)
		}
	}
	wantStatus := map[uint64]amdp.ReceiptStatus{1: amdp.StatusDelivered, 2: amdp.StatusRejected, 3: amdp.StatusDelivered, 5: amdp.StatusDelivered}
	wantCount := map[uint64]uint64{1: 2, 2: 1, 3: 1, 5: 1}
	for e, err := range c.Executions(ctx, "in", 0, max) {
		if err != nil {
			t.Fatal(err)
		}
		d, ok, err := c.FindDelivery(ctx, amdp.PacketID("in", e.Seq))
		if err != nil || !ok {
			t.Fatalf("FindDelivery in/%d: %v %v", e.Seq, ok, err)
		}
		if e.Status != wantStatus[e.Seq] || e.Count != wantCount[e.Seq] || e.PacketID != d.PacketID ||
			!bytes.Equal(e.TxHash, d.TxHash) || e.Height != d.Height || e.ResultHash != d.ResultHash || e.Reason != d.Reason {
			t.Errorf("execution in/%d: %+v, FindDelivery %+v, want status %v count %d", e.Seq, e, d, wantStatus[e.Seq], wantCount[e.Seq])
		}
	}
}

func TestRecords(t *testing.T) {
	c := openChain(t, t.TempDir(), Options{RejectPrefix: []byte("BAD")})
	recordsFixture(t, c)
	checkRecords(t, c)

	// Breaking out of the loop releases the view: Close does not hang.
	for range c.Requests(testCtx(t), "p", 0, 10) {
		break
	}
	// EraseDelivery removes the record from both lookups.
	ctx := testCtx(t)
	if err := c.EraseDelivery(ctx, "in", 3); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.FindDelivery(ctx, amdp.PacketID("in", 3)); ok || err != nil {
		t.Fatalf("erased delivery found: %v %v", ok, err)
	}
	got := seqsOf(t, c.Executions(ctx, "in", 0, 10), func(e subchain.Execution) uint64 { return e.Seq })
	if !slices.Equal(got, []uint64{1, 2, 5}) {
		t.Fatalf("executions after erase: %v", got)
	}
}

// TestRecordsIndexOldStore: a store written before the range indexes
// existed (simulated by deleting them and the mark) is indexed at Open
// from its blocks, with the same answers.
func TestRecordsIndexOldStore(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, Options{ID: "sim-a", BlockInterval: testInterval, RejectPrefix: []byte("BAD")})
	if err != nil {
		t.Fatal(err)
	}
	recordsFixture(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := openDB(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{prefixRequest, prefixExecution} {
		if err := db.DeleteRange(p, prefixEnd(p), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Delete(keyIndexed, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	c = openChain(t, dir, Options{RejectPrefix: []byte("BAD")})
	checkRecords(t, c)
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openChain(t, dir, Options{})
	_, err := Open(dir, Options{ID: "sim-a"})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open of a store in use: %v, want ErrLocked", err)
	}
}
