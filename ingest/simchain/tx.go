package simchain

import (
	"bytes"
	"context"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Submit is a source app's request: the chain's cross-chain contract
// accepts p as a tx if it is a valid packet (amdp.Packet.Validate with the
// default limits) and its sequence is the pipe's next one, counting the
// mempool; otherwise it returns ErrInvalidPacket or a *SequenceError
// (ErrSequenceGap, ErrSequenceReplay). The tx goes into the next block,
// where it appears as an subchain.Event. Submit waits for room when the
// mempool is full; cancelling ctx stops that wait.
//
// Submit does not check the signature: that is the router's job, against
// the key the pipe records on govchain.
func (c *Chain) Submit(ctx context.Context, p *amdp.Packet) ([]byte, error) {
	if err := p.Validate(amdp.DefaultLimits()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	body, err := amdp.EncodePacket(nil, p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	pipe, seq := p.GetPipeId(), p.GetSequence()
	t, err := c.enqueue(ctx, func() (*tx, bool, error) {
		want := c.seqs[pipe] + 1
		switch {
		case seq < want:
			return nil, false, &SequenceError{Pipe: pipe, Got: seq, Want: want, Err: ErrSequenceReplay}
		case seq > want:
			return nil, false, &SequenceError{Pipe: pipe, Got: seq, Want: want, Err: ErrSequenceGap}
		}
		c.seqs[pipe] = seq
		return &tx{kind: txRequest, body: body, pipe: pipe, seq: seq, id: p.ID()}, true, nil
	})
	if err != nil {
		return nil, err
	}
	return t.hash[:], nil
}

// Deliver executes packets on this chain, one delivery tx each, in order,
// and returns their outcomes once the blocks holding them are committed
// (not necessarily final). The destination contract accepts a packet or,
// when its payload starts with Options.RejectPrefix, rejects it: a
// Delivery with status rejected and a reason, not an error.
//
// Deliver does not deduplicate: a packet delivered twice is executed twice
// and counted in its DeliveryRecord. If ctx ends or the chain closes while
// Deliver waits, some of the packets may have been executed: ask
// FindDelivery.
func (c *Chain) Deliver(ctx context.Context, packets []*amdp.Packet) ([]subchain.Delivery, error) {
	txs := make([]*tx, len(packets))
	for i, p := range packets {
		if err := p.Validate(amdp.DefaultLimits()); err != nil {
			return nil, fmt.Errorf("%w: packets[%d]: %w", ErrInvalidPacket, i, err)
		}
		body, err := amdp.EncodePacket(nil, p)
		if err != nil {
			return nil, fmt.Errorf("%w: packets[%d]: %w", ErrInvalidPacket, i, err)
		}
		txs[i] = &tx{kind: txDeliver, body: body, id: p.ID(), pipe: p.GetPipeId(), seq: p.GetSequence(), payload: bytes.Clone(p.GetPayload()),
			timeoutHeight: p.GetTimeoutHeight(), timeoutMs: p.GetTimeoutUnixMs()}
	}
	for _, t := range txs {
		if _, err := c.enqueue(ctx, func() (*tx, bool, error) { return t, true, nil }); err != nil {
			return nil, err
		}
	}
	if len(txs) == 0 {
		return nil, nil
	}
	if err := c.waitCommitted(ctx, txs[len(txs)-1].nonce); err != nil {
		return nil, err
	}
	out := make([]subchain.Delivery, len(txs))
	for i, t := range txs {
		out[i] = t.res // written by the producer before it published the block
	}
	return out, nil
}

// Rollback records, as a tx, the undoing of the source request (pipe, seq)
// after its destination refused it, and returns once that tx is
// committed. A request rolled back already (or whose rollback is in the
// mempool) is not rolled back again: Rollback is idempotent. A (pipe, seq)
// that no accepted request has is ErrUnknownRequest.
func (c *Chain) Rollback(ctx context.Context, pipeID string, seq uint64, reason string) error {
	key := string(rollbackKey(pipeID, seq))
	t, err := c.enqueue(ctx, func() (*tx, bool, error) {
		if seq == 0 || seq > c.seqs[pipeID] {
			return nil, false, fmt.Errorf("%w: pipe %q sequence %d", ErrUnknownRequest, pipeID, seq)
		}
		if t, ok := c.pendingRollbacks[key]; ok {
			return t, false, nil
		}
		// Under c.mu: the producer removes a rollback from
		// pendingRollbacks only after committing it, so either the map or
		// the database has it.
		if _, found, err := get(c.db, []byte(key)); err != nil || found {
			return nil, false, err
		}
		t := &tx{kind: txRollback, body: encodeRollbackBody(pipeID, seq, reason), pipe: pipeID, seq: seq, reason: reason}
		c.pendingRollbacks[key] = t
		return t, true, nil
	})
	if err != nil || t == nil {
		return err
	}
	return c.waitCommitted(ctx, t.nonce)
}

// FindDelivery returns what this chain recorded about the packet: its
// first execution (status, tx, height, result), or false if it was never
// delivered here.
func (c *Chain) FindDelivery(ctx context.Context, packetID [32]byte) (subchain.Delivery, bool, error) {
	rec, ok, err := c.DeliveryRecord(ctx, packetID)
	if err != nil || !ok {
		return subchain.Delivery{}, false, err
	}
	return subchain.Delivery{
		PacketID:   packetID,
		Status:     rec.Status,
		TxHash:     rec.TxHash,
		Height:     rec.Height,
		ResultHash: rec.ResultHash,
		Reason:     rec.Reason,
	}, true, nil
}

// DeliveryRecord is FindDelivery with the execution count.
func (c *Chain) DeliveryRecord(ctx context.Context, packetID [32]byte) (DeliveryRecord, bool, error) {
	if err := ctx.Err(); err != nil {
		return DeliveryRecord{}, false, err
	}
	if err := c.acquire(); err != nil {
		return DeliveryRecord{}, false, err
	}
	defer c.users.Done()
	v, ok, err := get(c.db, deliveryKey(packetID))
	if err != nil || !ok {
		return DeliveryRecord{}, false, err
	}
	rec, err := decodeDeliveryRecord(v)
	if err != nil {
		return DeliveryRecord{}, false, err
	}
	return rec, true, nil
}

// Deliveries calls fn for every delivery record, in packet id order, from
// one consistent view of the committed state, until fn returns false.
func (c *Chain) Deliveries(fn func(id [32]byte, rec DeliveryRecord) bool) error {
	if err := c.acquire(); err != nil {
		return err
	}
	defer c.users.Done()
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: prefixDelivery, UpperBound: prefixEnd(prefixDelivery)})
	if err != nil {
		return fmt.Errorf("simchain: iterate deliveries: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		var id [32]byte
		if copy(id[:], it.Key()[len(prefixDelivery):]) != 32 {
			it.Close()
			return fmt.Errorf("%w: delivery key %x", ErrCorrupt, it.Key())
		}
		rec, err := decodeDeliveryRecord(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if !fn(id, rec) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("simchain: iterate deliveries: %w", err)
	}
	return nil
}

// enqueue waits for room in the mempool, then runs admit under c.mu: the
// contract's checks and the append happen under one lock, so that
// concurrent submitters see each other's pending txs. admit returns the tx
// and whether to append it (false: an existing tx, or nothing, to return
// as is). enqueue assigns the nonce and hash of an appended tx.
func (c *Chain) enqueue(ctx context.Context, admit func() (*tx, bool, error)) (*tx, error) {
	for {
		c.mu.Lock()
		if err := c.usableLocked(); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if len(c.pending) < c.opts.MempoolSize {
			t, add, err := admit()
			if err == nil && add {
				t.nonce = c.nextNonce
				c.nextNonce++
				t.hash = txHash(c.opts.ID, t.nonce, t.kind, t.body)
				c.pending = append(c.pending, t)
			}
			c.mu.Unlock()
			return t, err
		}
		ch := c.blockCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.stopped:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// waitCommitted waits until the tx with this nonce is in a committed
// block. Txs commit in nonce order, so the head's last nonce says it.
func (c *Chain) waitCommitted(ctx context.Context, nonce uint64) error {
	for {
		c.mu.Lock()
		done, ch := c.head.nonce >= nonce, c.blockCh
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-c.stopped:
			// The producer commits the whole mempool before it stops
			// cleanly; look once more.
			c.mu.Lock()
			done = c.head.nonce >= nonce
			c.mu.Unlock()
			if done {
				return nil
			}
			return c.stopErr()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
