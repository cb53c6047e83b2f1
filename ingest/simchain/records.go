package simchain

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

var _ subchain.Records = (*Chain)(nil)

// Requests lists the pipe's accepted source requests with from <= seq <=
// to, in sequence order (subchain.Records).
func (c *Chain) Requests(ctx context.Context, pipe string, from, to uint64) iter.Seq2[subchain.Request, error] {
	return func(yield func(subchain.Request, error) bool) {
		c.scan(ctx, prefixRequest, pipe, from, to, func(seq uint64, v []byte) (bool, error) {
			r, err := decodeRequestRecord(v)
			if err != nil {
				return false, err
			}
			return yield(subchain.Request{Pipe: pipe, Seq: seq, Height: r.height, TxHash: r.txHash[:], PacketID: r.id}, nil), nil
		}, func(err error) { yield(subchain.Request{}, err) })
	}
}

// Rollbacks lists the pipe's rolled-back source requests with from <= seq
// <= to, in sequence order (subchain.Records).
func (c *Chain) Rollbacks(ctx context.Context, pipe string, from, to uint64) iter.Seq2[subchain.Rollback, error] {
	return func(yield func(subchain.Rollback, error) bool) {
		c.scan(ctx, prefixRollback, pipe, from, to, func(seq uint64, v []byte) (bool, error) {
			r, err := decodeRollbackRecord(v)
			if err != nil {
				return false, err
			}
			return yield(subchain.Rollback{Pipe: pipe, Seq: seq, Height: r.height, TxHash: r.txHash[:], Reason: r.reason}, nil), nil
		}, func(err error) { yield(subchain.Rollback{}, err) })
	}
}

// Executions lists the delivery records of the pipe's packets with from <=
// seq <= to, in sequence order (subchain.Records): what FindDelivery
// answers, with the execution count.
func (c *Chain) Executions(ctx context.Context, pipe string, from, to uint64) iter.Seq2[subchain.Execution, error] {
	return func(yield func(subchain.Execution, error) bool) {
		c.scan(ctx, prefixExecution, pipe, from, to, func(seq uint64, v []byte) (bool, error) {
			r, err := decodeDeliveryRecord(v)
			if err != nil {
				return false, err
			}
			return yield(subchain.Execution{Pipe: pipe, Seq: seq, Count: r.Count, Delivery: subchain.Delivery{
				PacketID:   amdp.PacketID(pipe, seq),
				Status:     r.Status,
				TxHash:     r.TxHash,
				Height:     r.Height,
				ResultHash: r.ResultHash,
				Reason:     r.Reason,
			}}, nil), nil
		}, func(err error) { yield(subchain.Execution{}, err) })
	}
}

// scan iterates the pipeSeqKey records under prefix for one pipe and a
// sequence range, from one pebble iterator (one consistent view), calling
// fn until it returns false or an error; a failure goes to fail.
func (c *Chain) scan(ctx context.Context, prefix []byte, pipe string, from, to uint64, fn func(seq uint64, v []byte) (bool, error), fail func(error)) {
	if from > to {
		return
	}
	if err := c.acquire(); err != nil {
		fail(err)
		return
	}
	defer c.users.Done()
	// Every key of the pipe is head+8 bytes long, so the key of `to`
	// followed by a zero byte is above it and below the next one.
	head := len(prefix) + 4 + len(pipe)
	upper := append(pipeSeqKey(prefix, pipe, to), 0)
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: pipeSeqKey(prefix, pipe, from), UpperBound: upper})
	if err != nil {
		fail(fmt.Errorf("simchain: iterate %s: %w", prefix, err))
		return
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
		}
		k := it.Key()
		if len(k) != head+8 {
			fail(fmt.Errorf("%w: key %x", ErrCorrupt, k))
			return
		}
		more, err := fn(binary.BigEndian.Uint64(k[head:]), it.Value())
		if err != nil {
			fail(err)
			return
		}
		if !more {
			return
		}
	}
	if err := it.Error(); err != nil {
		fail(fmt.Errorf("simchain: iterate %s: %w", prefix, err))
	}
}

// indexOnce builds the range indexes (requests and executions by pipe and
// sequence) of a store written before they existed, from its blocks, and
// marks the store indexed. It runs at Open, before the producer starts,
// so nothing writes meanwhile. A crash halfway leaves the mark unset and
// the next Open starts again: every write is an idempotent overwrite.
func (c *Chain) indexOnce() error {
	if _, ok, err := get(c.db, keyIndexed); err != nil || ok {
		return err
	}
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: prefixBlock, UpperBound: prefixEnd(prefixBlock)})
	if err != nil {
		return fmt.Errorf("simchain: index: %w", err)
	}
	defer it.Close()
	b := c.db.NewBatch()
	defer func() { b.Close() }()
	blocks := 0
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) != len(prefixBlock)+8 {
			return fmt.Errorf("%w: block key %x", ErrCorrupt, it.Key())
		}
		height := binary.BigEndian.Uint64(it.Key()[len(prefixBlock):])
		_, _, txs, err := decodeBlock(it.Value())
		if err != nil {
			return err
		}
		for _, t := range txs {
			if t.kind != txRequest && t.kind != txDeliver {
				continue
			}
			p, err := amdp.DecodePacket(t.body, amdp.DefaultLimits())
			if err != nil {
				return fmt.Errorf("%w: block %d tx %x: %w", ErrCorrupt, height, t.hash, err)
			}
			pipe, seq, id := p.GetPipeId(), p.GetSequence(), p.ID()
			if t.kind == txRequest {
				rec := requestRecord{height: height, txHash: t.hash, id: id}
				err = b.Set(requestKey(pipe, seq), rec.encode(), nil)
			} else {
				var v []byte
				var found bool
				if v, found, err = get(c.db, deliveryKey(id)); err == nil && found {
					err = b.Set(executionKey(pipe, seq), v, nil)
				}
			}
			if err != nil {
				return fmt.Errorf("simchain: index: %w", err)
			}
		}
		if blocks++; b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("simchain: index: %w", err)
			}
			b.Close()
			b = c.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("simchain: index: %w", err)
	}
	if err := b.Set(keyIndexed, []byte{recordVersion}, nil); err != nil {
		return fmt.Errorf("simchain: index: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("simchain: index: %w", err)
	}
	if blocks > 0 {
		c.log.Info("simchain indexed a store written before its range indexes", "blocks", blocks)
	}
	return nil
}

// EraseDelivery deletes the chain's record of a packet's execution, as if
// the chain had lost it (a wiped node, a reorg past the relay's view): a
// fault to inject in tests of the audits that must notice it. It is not
// ordered with a delivery of the same packet in a block being produced.
func (c *Chain) EraseDelivery(ctx context.Context, pipe string, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.acquire(); err != nil {
		return err
	}
	defer c.users.Done()
	b := c.db.NewBatch()
	defer b.Close()
	id := amdp.PacketID(pipe, seq)
	if err := b.Delete(deliveryKey(id), nil); err != nil {
		return fmt.Errorf("simchain: erase delivery: %w", err)
	}
	if err := b.Delete(executionKey(pipe, seq), nil); err != nil {
		return fmt.Errorf("simchain: erase delivery: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("simchain: erase delivery: %w", err)
	}
	return nil
}
