package simchain

import (
	"context"
	"fmt"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Blocks streams final blocks with height >= from (below 1 means 1) in
// height order without gaps: the stored ones first, read back from the
// database one at a time, then each new one as it becomes final. The
// channel is unbuffered, so a slow reader holds the stream back and
// nothing is dropped. Any number of streams may run at once. The stream
// ends when ctx ends (Err: nil), when the chain closes (ErrClosed) or on a
// storage error; then the channel closes.
func (c *Chain) Blocks(ctx context.Context, from uint64) (<-chan subchain.Block, error) {
	if from < 1 {
		from = 1
	}
	if err := c.acquire(); err != nil {
		return nil, err
	}
	out := make(chan subchain.Block)
	go func() {
		defer c.users.Done()
		err := c.stream(ctx, from, out)
		c.errMu.Lock()
		c.streamErr = err
		c.errMu.Unlock()
		// Err is set before the channel closes, so a reader that sees
		// the close reads the right reason.
		close(out)
	}()
	return out, nil
}

func (c *Chain) stream(ctx context.Context, next uint64, out chan<- subchain.Block) error {
	for {
		c.mu.Lock()
		final, ch := c.finalLocked(), c.blockCh
		c.mu.Unlock()
		for ; next <= final; next++ {
			b, err := c.readBlock(next)
			if err != nil {
				return err
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return nil
			case <-c.stopped:
				return c.stopErr()
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		case <-c.stopped:
			return c.stopErr()
		}
	}
}

// readBlock reads a committed block and decodes its requests into fresh
// packets, so that no two streams share one.
func (c *Chain) readBlock(height uint64) (subchain.Block, error) {
	v, ok, err := get(c.db, blockKey(height))
	if err != nil {
		return subchain.Block{}, err
	}
	if !ok {
		return subchain.Block{}, fmt.Errorf("%w: block %d is missing", ErrCorrupt, height)
	}
	_, hash, txs, err := decodeBlock(v)
	if err != nil {
		return subchain.Block{}, fmt.Errorf("block %d: %w", height, err)
	}
	b := subchain.Block{Height: height, Hash: hash[:]}
	for _, t := range txs {
		if t.kind != txRequest {
			continue
		}
		p, err := amdp.DecodePacket(t.body, amdp.DefaultLimits())
		if err != nil {
			return subchain.Block{}, fmt.Errorf("%w: block %d: request %x: %w", ErrCorrupt, height, t.hash, err)
		}
		b.Events = append(b.Events, subchain.Event{Height: height, TxHash: append([]byte(nil), t.hash[:]...), Packet: p})
	}
	return b, nil
}
