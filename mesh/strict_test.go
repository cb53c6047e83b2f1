package mesh

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// anchorBook is the governance chain's open-batch anchors as the receiver
// sees them, filled in by the test as the chain would commit them.
type anchorBook struct {
	mu      sync.Mutex // guards anchors
	anchors map[uint64]*govchain.BatchAnchor
}

func (a *anchorBook) BatchAnchor(_ context.Context, from string, seq uint64) (*govchain.BatchAnchor, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	an, ok := a.anchors[seq]
	return an, ok, nil
}

func (a *anchorBook) commit(an *govchain.BatchAnchor) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.anchors[an.BatchSeq] = an
}

// TestStrictHeldByReceiver: the receiver alone holds strict mode. The
// sender here is a bare mesh endpoint, which never waits for an anchor
// (the router's wait is not in the path). A missing anchor delays
// delivery: the batch is answered "retry" with nothing executed, and is
// delivered once its anchor commits. An anchor with another Merkle root or
// count refuses the batch, with nothing executed on the destination chain.
func TestStrictHeldByReceiver(t *testing.T) {
	for _, tc := range []struct {
		name   string
		anchor func(h *amdp.BatchHeader) *govchain.BatchAnchor // what the chain commits after the first try
		want   error                                           // the answer to the resend once it has
	}{
		{"anchor committed late", func(h *amdp.BatchHeader) *govchain.BatchAnchor {
			return &govchain.BatchAnchor{FromRelay: h.FromRelay, ToRelay: h.ToRelay, BatchSeq: h.BatchSeq, MerkleRoot: h.MerkleRoot, Count: h.PacketCount}
		}, nil},
		{"wrong merkle root", func(h *amdp.BatchHeader) *govchain.BatchAnchor {
			root := append([]byte(nil), h.MerkleRoot...)
			root[0] ^= 0xff
			return &govchain.BatchAnchor{FromRelay: h.FromRelay, ToRelay: h.ToRelay, BatchSeq: h.BatchSeq, MerkleRoot: root, Count: h.PacketCount}
		}, ErrBatchRejected},
		{"wrong count", func(h *amdp.BatchHeader) *govchain.BatchAnchor {
			return &govchain.BatchAnchor{FromRelay: h.FromRelay, ToRelay: h.ToRelay, BatchSeq: h.BatchSeq, MerkleRoot: h.MerkleRoot, Count: h.PacketCount + 1}
		}, ErrBatchRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			book := &anchorBook{anchors: map[uint64]*govchain.BatchAnchor{}}
			n := newTestNet(t, "relay-a", "relay-b")
			n.addPipe("ab-s", "relay-a", "relay-b", func(p *govchain.Pipe) { p.Mode = govchain.ConsistencyMode_MODE_STRICT })
			b := n.start("relay-b", func(c *Config) { c.Anchors = book })
			a := n.start("relay-a", sendOnly)
			chain := n.relays["relay-b"].chain
			batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-s", 4, 100)...)
			ctx := ctxT(t, 20*time.Second)

			// No anchor yet: held back, nothing executed.
			if _, err := a.Send(ctx, "relay-b", batch); !errors.Is(err, ErrPeerFailed) {
				t.Fatalf("send before the anchor: %v, want %v", err, ErrPeerFailed)
			}
			if calls, _, executed := chain.counts(); calls != 0 || executed != 0 {
				t.Fatalf("before the anchor: %d deliver calls, %d executions", calls, executed)
			}
			if got := rejected(t, b, "not_anchored_yet"); got != 1 {
				t.Fatalf("not_anchored_yet %v, want 1", got)
			}

			book.commit(tc.anchor(batch.Header))
			rb, err := a.Send(ctx, "relay-b", batch)
			_, _, executed := chain.counts()
			if tc.want != nil {
				if !errors.Is(err, tc.want) || executed != 0 {
					t.Fatalf("send against a differing anchor: %v with %d executions, want %v and none", err, executed, tc.want)
				}
				return
			}
			if err != nil || executed != len(batch.Packets) {
				t.Fatalf("send once anchored: %v, %d executions", err, executed)
			}
			for i, r := range rb.Receipts {
				if r.Status != amdp.StatusDelivered {
					t.Fatalf("receipt %d: %v", i, r.Status)
				}
			}
		})
	}
}
