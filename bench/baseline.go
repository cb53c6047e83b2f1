package bench

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// The per-packet anchoring baseline: the design that BitXHub and IBC
// relayers use, one governance tx per cross-chain packet, run against the
// same governance node as the mesh. Its packets/s is the node's committed
// tx/s for that tx, measured at its best: txs signed beforehand and handed
// to the mempool back to back in nonce order, not one at a time.

// Baseline tx kinds.
const (
	// BaselineOpenBatch is what a per-packet relay sends: a
	// MsgOpenBatches with one BatchOpen of count 1, signed by the source
	// relay's account (relay-org-1), on a pipe that carries no traffic.
	BaselineOpenBatch = "open-batch"
	// BaselineRegisterNode is a stand-in from before open-batch anchors
	// existed: one MsgRegisterNode (audit node) per packet from a
	// genesis governor.
	BaselineRegisterNode = "register-node"
)

// baselinePipe is the pipe the open-batch baseline anchors on; the
// cluster registers it, and no app sends on it, so its anchors never mix
// with the traffic's.
const baselinePipe = "pipe-baseline"

// baselineSeqBase keeps the baseline's batch sequences far from the
// relays' own (nanosecond timestamps start near 1.7e18).
const baselineSeqBase = uint64(1) << 62

// perPacketTx is the governance tx a per-packet design sends for packet
// i (from 0): the one place to change what the baseline measures.
func perPacketTx(kind string, i int) (crypto.Signer, proto.Message, error) {
	switch kind {
	case BaselineOpenBatch:
		seq := uint64(i + 1)
		root := amdp.MerkleRoot([][32]byte{amdp.PacketID(baselinePipe, seq)})
		return crypto.DevSigner("relay-org-1"), &govchain.MsgOpenBatches{Batches: []*govchain.BatchOpen{{
			FromRelay: "relay-org-1", ToRelay: "relay-org-2", BatchSeq: baselineSeqBase + seq, MerkleRoot: root[:], Count: 1,
			Ranges: []*govchain.PipeRange{{Pipe: baselinePipe, First: seq, Last: seq}},
		}}}, nil
	case BaselineRegisterNode:
		id := fmt.Sprintf("%08x", i)
		return crypto.DevSigner("gov-org-1"), &govchain.MsgRegisterNode{Id: hex.EncodeToString([]byte("ccgp-bench-" + id + "."))[:40],
			Kind: govchain.NodeKind_NODE_AUDIT}, nil
	default:
		return nil, nil, fmt.Errorf("bench: unknown baseline tx kind %q (want %s or %s)", kind, BaselineOpenBatch, BaselineRegisterNode)
	}
}

// BaselineResult is what PerPacketBaseline measured.
type BaselineResult struct {
	Kind      string
	Txs       int
	Committed int // succeeded
	Rejected  int // committed with a rejection code (counted, not in the rate)
	Seconds   float64
	PerSecond float64 // committed txs/s: packets/s of the per-packet design
}

// PerPacketBaseline signs n txs of kind, hands them to c's governance node
// in nonce order and measures committed tx/s from the first broadcast to
// the commit of the last. The cluster should carry no traffic meanwhile.
func PerPacketBaseline(ctx context.Context, c *Cluster, kind string, n int) (*BaselineResult, error) {
	if n < 1 {
		return nil, fmt.Errorf("bench: baseline needs at least 1 tx")
	}
	txs := make([][]byte, n)
	ours := make(map[[32]byte]struct{}, n)
	for i := range txs {
		s, m, err := perPacketTx(kind, i)
		if err != nil {
			return nil, err
		}
		// Client.Sign takes the next nonce from the client the relays share,
		// so their own txs later follow these.
		if txs[i], err = c.Gov.Sign(ctx, s, m); err != nil {
			return nil, fmt.Errorf("bench: baseline: sign: %w", err)
		}
		ours[txHash(txs[i])] = struct{}{}
	}
	h0, err := c.Gov.Height(ctx)
	if err != nil {
		return nil, err
	}
	res := &BaselineResult{Kind: kind, Txs: n}
	start := time.Now()
	// One goroutine, in nonce order: the mempool keeps arrival order, and a
	// tx that overtook a lower nonce would be refused in the block.
	for _, raw := range txs {
		if _, err := c.Gov.RPC().BroadcastTxAsync(ctx, raw); err != nil {
			return nil, fmt.Errorf("bench: baseline: broadcast: %w", err)
		}
	}
	next := h0 + 1
	var last time.Time
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for res.Committed+res.Rejected < n {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("bench: baseline: %d of %d txs committed in 5 minutes", res.Committed+res.Rejected, n)
		}
		h := c.Node.Height()
		for ; next <= h; next++ {
			blk, err := c.Gov.RPC().Block(ctx, &next)
			if err != nil {
				break
			}
			br, err := c.Gov.RPC().BlockResults(ctx, &next)
			if err != nil {
				break // results are stored a moment after the height: read again
			}
			for i, raw := range blk.Block.Data.Txs {
				if _, ok := ours[txHash(raw)]; !ok || i >= len(br.TxResults) {
					continue
				}
				if br.TxResults[i].Code == govchain.CodeOK {
					res.Committed++
				} else {
					res.Rejected++
				}
				last = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
	res.Seconds = last.Sub(start).Seconds()
	if res.Seconds > 0 {
		res.PerSecond = float64(res.Committed) / res.Seconds
	}
	return res, nil
}
