package govchain

import (
	"context"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/ccgpmesh/ccgp/crypto"
)

// TestExceptionsIn: the records of one pipe's range, at the latest height
// and at an earlier one, across pages, and nothing outside the range.
func TestExceptionsIn(t *testing.T) {
	c := newMemChain(t)
	c.withPipe()
	ccA := crypto.DevSigner("cc-org-a")
	exc := func(state PacketState, seqs ...uint64) *MsgTxException {
		m := &MsgTxException{State: state, Reason: "test"}
		for _, s := range seqs {
			m.Packets = append(m.Packets, &PacketRef{Pipe: "p1", Seq: s})
		}
		return m
	}
	var many []uint64
	for s := uint64(10); s < 10+2*exceptionsPage+3; s++ {
		many = append(many, s)
	}
	c.ok(ccA, exc(PacketState_PACKET_FAILED, append([]uint64{2, 3, 5, 7}, many...)...))
	before := c.height
	c.ok(ccA, exc(PacketState_PACKET_MANUAL, 3))
	query := func(h int64) listQuery {
		return func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
			r, err := c.app.Query(ctx, &abci.QueryRequest{Path: QueryList, Data: req, Height: h})
			if err != nil {
				return 0, "", nil, err
			}
			return r.Code, r.Log, r.Value, nil
		}
	}
	seqs := func(exs []*TxException) (out []uint64) {
		for _, e := range exs {
			if e.Pipe != "p1" {
				t.Fatalf("record of pipe %s", e.Pipe)
			}
			out = append(out, e.Seq)
		}
		return out
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		h           int64
		first, last uint64
		want        int
		state3      PacketState
	}{
		{"latest", 0, 3, 7, 3, PacketState_PACKET_MANUAL},
		{"earlier height", before, 3, 7, 3, PacketState_PACKET_FAILED},
		{"one seq", 0, 5, 5, 1, 0},
		{"empty range", 0, 8, 9, 0, 0},
		{"across pages", 0, 1, 1 << 40, 4 + len(many), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exs, err := exceptionsIn(ctx, "p1", tc.first, tc.last, query(tc.h))
			if err != nil {
				t.Fatal(err)
			}
			got := seqs(exs)
			if len(got) != tc.want {
				t.Fatalf("seqs %v, want %d records", got, tc.want)
			}
			for i, s := range got {
				if s < tc.first || s > tc.last || (i > 0 && s <= got[i-1]) {
					t.Fatalf("seqs %v: out of range %d-%d or out of order", got, tc.first, tc.last)
				}
			}
			if tc.state3 != 0 && (got[0] != 3 || exs[0].State != tc.state3) {
				t.Fatalf("seq 3 at height %d: %v, want %v", tc.h, exs[0].State, tc.state3)
			}
		})
	}
	if _, err := exceptionsIn(ctx, "p1", 0, 3, query(0)); err == nil {
		t.Fatal("range from 0 accepted")
	}
	if _, err := exceptionsIn(ctx, "p1", 1, 3, query(c.height+50)); err == nil {
		t.Fatal("a height the node does not have answered")
	}
}
