package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/govchain"
)

// govWatch reads every governance block as it commits and counts what the
// platform put on chain: all txs (for txs per packet), and the packets
// that open-batch anchors, receipt anchors and confirmations cover, timed
// by the probe from each packet's source commit to the block that
// anchored or confirmed it. It needs nothing from the relays: the chain is
// the record.
type govWatch struct {
	gov   *govchain.Client
	probe *probe
	clock *chainClock

	txs, okTxs       atomic.Uint64 // committed txs, and those that succeeded
	anchorTxs        atomic.Uint64 // successful open-batch, receipt and confirm txs
	opened, receiptd atomic.Uint64 // packets of the feeds covered by open / receipt anchors
	confirmd         atomic.Uint64 // packets of the feeds in confirmed batches
	errs             atomic.Uint64 // blocks that could not be read

	mu    sync.Mutex // guards opens
	opens map[batchKey]*openRec
}

type batchKey struct {
	from string
	seq  uint64
}

type openRec struct {
	ranges []*govchain.PipeRange
	at     time.Duration
}

func newGovWatch(gov *govchain.Client, pr *probe, clock *chainClock) *govWatch {
	return &govWatch{gov: gov, probe: pr, clock: clock, opens: map[batchKey]*openRec{}}
}

// run reads each new block from the height after `from` on, until ctx
// ends.
func (w *govWatch) run(ctx context.Context, from int64) error {
	heights, err := w.gov.Blocks(ctx)
	if err != nil {
		return err
	}
	next := from + 1
	prune := time.NewTicker(30 * time.Second)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			w.prune()
		case h, ok := <-heights:
			if !ok {
				return nil
			}
			at := w.clock.now()
			for ; next <= h; next++ {
				if err := w.block(ctx, next, at); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					w.errs.Add(1)
				}
			}
		}
	}
}

// block counts height h's txs and times the anchors in it.
func (w *govWatch) block(ctx context.Context, h int64, at time.Duration) error {
	blk, err := w.gov.RPC().Block(ctx, &h)
	if err != nil {
		return fmt.Errorf("bench: govchain block %d: %w", h, err)
	}
	res, err := w.gov.RPC().BlockResults(ctx, &h)
	if err != nil {
		return fmt.Errorf("bench: govchain block %d results: %w", h, err)
	}
	txs := blk.Block.Data.Txs
	w.txs.Add(uint64(len(txs)))
	for i, raw := range txs {
		if i >= len(res.TxResults) || res.TxResults[i].Code != govchain.CodeOK {
			continue
		}
		w.okTxs.Add(1)
		var tx govchain.Tx
		var body govchain.TxBody
		if proto.Unmarshal(raw, &tx) != nil || proto.Unmarshal(tx.Body, &body) != nil {
			continue
		}
		switch m := body.Msg.(type) {
		case *govchain.TxBody_OpenBatches:
			w.anchorTxs.Add(1)
			w.open(m.OpenBatches, at)
		case *govchain.TxBody_AnchorReceipts:
			w.anchorTxs.Add(1)
			for _, b := range m.AnchorReceipts.GetBatches() {
				w.mu.Lock()
				o := w.opens[batchKey{b.FromRelay, b.BatchSeq}]
				w.mu.Unlock()
				if o != nil {
					w.receiptd.Add(count(o.ranges, w.probe))
				}
			}
		case *govchain.TxBody_ConfirmBatches:
			w.anchorTxs.Add(1)
			for _, b := range m.ConfirmBatches.GetBatches() {
				k := batchKey{b.FromRelay, b.BatchSeq}
				w.mu.Lock()
				o := w.opens[k]
				delete(w.opens, k)
				w.mu.Unlock()
				if o == nil {
					continue
				}
				for _, rg := range o.ranges {
					w.confirmd.Add(w.probe.timed(&w.probe.confirmed, rg.Pipe, rg.First, rg.Last, at))
				}
			}
		}
	}
	return nil
}

func (w *govWatch) open(m *govchain.MsgOpenBatches, at time.Duration) {
	for _, b := range m.GetBatches() {
		var mine []*govchain.PipeRange
		for _, rg := range b.Ranges {
			if w.probe.feeds[rg.Pipe] == nil {
				continue
			}
			mine = append(mine, rg)
			w.opened.Add(w.probe.timed(&w.probe.anchored, rg.Pipe, rg.First, rg.Last, at))
		}
		if len(mine) == 0 {
			continue
		}
		w.mu.Lock()
		w.opens[batchKey{b.FromRelay, b.BatchSeq}] = &openRec{ranges: mine, at: at}
		w.mu.Unlock()
	}
}

// prune forgets open batches never confirmed after ten minutes, so that a
// run without confirmations stays in bounded memory.
func (w *govWatch) prune() {
	now := w.clock.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, o := range w.opens {
		if now-o.at > 10*time.Minute {
			delete(w.opens, k)
		}
	}
}

func count(ranges []*govchain.PipeRange, pr *probe) uint64 {
	var n uint64
	for _, rg := range ranges {
		if pr.feeds[rg.Pipe] != nil && rg.Last >= rg.First {
			n += rg.Last - rg.First + 1
		}
	}
	return n
}

// txHash is CometBFT's tx hash (SHA-256 of the tx bytes).
func txHash(raw []byte) [32]byte { return sha256.Sum256(raw) }
