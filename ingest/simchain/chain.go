package simchain

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

var _ subchain.Chain = (*Chain)(nil)

// Chain is one simulated subchain. All methods are safe for concurrent
// use.
type Chain struct {
	opts Options
	log  *slog.Logger
	db   *pebble.DB

	done    chan struct{}  // closed by Close: the producer commits the mempool and exits
	stopped chan struct{}  // closed when the producer has exited
	users   sync.WaitGroup // streams and readers of db; Close waits for them before closing db

	closeOnce sync.Once
	closeErr  error

	mu               sync.Mutex // guards the following
	closed           bool
	fatal            error             // the producer's storage failure: the chain stopped
	head             head              // the last committed block
	blockCh          chan struct{}     // closed and replaced at every committed block
	pending          []*tx             // the mempool, in nonce order
	seqs             map[string]uint64 // last accepted sequence per pipe, counting the mempool
	nextNonce        uint64
	pendingRollbacks map[string]*tx // by rollbackKey, while in the mempool

	errMu     sync.Mutex // guards streamErr
	streamErr error
}

// tx is one transaction from submission to commit.
type tx struct {
	kind  txKind
	nonce uint64 // chain-wide, in submission order; makes equal txs distinct
	hash  [32]byte
	body  []byte

	pipe    string   // request, rollback, deliver (the packet's, for the execution index)
	seq     uint64   // request, rollback, deliver
	id      [32]byte // request, deliver
	payload []byte   // deliver: a copy; the caller may reuse its packet once Deliver returns, even early
	// deliver: the packet's timeouts, judged at the block it executes in
	timeoutHeight, timeoutMs uint64
	reason                   string // rollback

	res subchain.Delivery // deliver: the outcome, set by the producer before it publishes the block
}

// Open opens (or creates) the chain stored in dir and starts producing
// blocks from its stored head.
func Open(dir string, opts Options) (*Chain, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := openDB(dir, opts.Logger)
	if err != nil {
		return nil, err
	}
	c := &Chain{
		opts:             opts,
		log:              opts.Logger.With("chain", opts.ID),
		db:               db,
		done:             make(chan struct{}),
		stopped:          make(chan struct{}),
		blockCh:          make(chan struct{}),
		seqs:             make(map[string]uint64),
		pendingRollbacks: make(map[string]*tx),
	}
	if err := c.load(); err != nil {
		db.Close()
		return nil, err
	}
	c.nextNonce = c.head.nonce + 1
	c.log.Info("simchain open", "dir", dir, "head", c.head.height, "pipes", len(c.seqs))
	go c.run()
	return c, nil
}

// load reads the committed state that the chain keeps in memory: the
// head and the pipes' sequences (one entry per pipe, a small set).
func (c *Chain) load() error {
	id, ok, err := get(c.db, keyID)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		if err := c.db.Set(keyID, []byte(c.opts.ID), pebble.Sync); err != nil {
			return fmt.Errorf("simchain: write chain id: %w", err)
		}
	case !bytes.Equal(id, []byte(c.opts.ID)):
		return fmt.Errorf("simchain: directory holds chain %q, not %q", id, c.opts.ID)
	}
	if err := c.indexOnce(); err != nil {
		return err
	}
	if v, ok, err := get(c.db, keyHead); err != nil {
		return err
	} else if ok {
		if c.head, err = decodeHead(v); err != nil {
			return err
		}
	}
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: prefixSeq, UpperBound: prefixEnd(prefixSeq)})
	if err != nil {
		return fmt.Errorf("simchain: read sequences: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if len(it.Value()) != 8 {
			it.Close()
			return fmt.Errorf("%w: sequence of pipe %q", ErrCorrupt, it.Key()[len(prefixSeq):])
		}
		c.seqs[string(it.Key()[len(prefixSeq):])] = binary.BigEndian.Uint64(it.Value())
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("simchain: read sequences: %w", err)
	}
	return nil
}

// Close stops block production after committing the txs still in the
// mempool, ends every Blocks stream (Err then reports ErrClosed), and
// closes the database. Calls after the first return its result.
func (c *Chain) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		<-c.stopped
		c.users.Wait()
		c.closeErr = c.db.Close()
		c.log.Info("simchain closed", "head", c.Stats().Head)
	})
	return c.closeErr
}

// ID is the subchain id.
func (c *Chain) ID() string { return c.opts.ID }

// Err reports why the last Blocks stream closed: nil after its ctx ended,
// ErrClosed after Close, or the storage error that stopped it.
func (c *Chain) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.streamErr
}

// Stats is the chain's own accounting, from committed blocks only.
type Stats struct {
	Head       uint64 // last committed height
	Final      uint64 // last final height (0: none yet)
	Requests   uint64 // source requests accepted into blocks
	Delivered  uint64 // distinct packet ids delivered (accepted by the contract)
	Duplicates uint64 // executions of an already executed packet id: sum of Count-1
	Rejected   uint64 // distinct packet ids rejected by the contract
	RolledBack uint64 // source requests rolled back
	TimedOut   uint64 // distinct packet ids refused because their timeout had passed
}

// Stats returns the chain's counters.
func (c *Chain) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.head.stats
	return Stats{
		Head:       c.head.height,
		Final:      c.finalLocked(),
		Requests:   s.requests,
		Delivered:  s.delivered,
		Duplicates: s.duplicates,
		Rejected:   s.rejected,
		RolledBack: s.rolledBack,
		TimedOut:   s.timedOut,
	}
}

// Head returns the last committed block's height and time. A delivery
// record that FindDelivery does not find after Head returned was not
// executed at any height up to that one (subchain.Chain).
func (c *Chain) Head(ctx context.Context) (subchain.Head, error) {
	if err := ctx.Err(); err != nil {
		return subchain.Head{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return subchain.Head{}, err
	}
	return subchain.Head{Height: c.head.height, TimeUnixMs: c.head.timeMs}, nil
}

// NextSequence is the sequence that pipe's next request must carry,
// counting requests still in the mempool.
func (c *Chain) NextSequence(pipeID string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seqs[pipeID] + 1
}

func (c *Chain) finalLocked() uint64 {
	d := uint64(c.opts.FinalityDepth)
	if c.head.height < d {
		return 0
	}
	return c.head.height - d
}

// usableLocked says why the chain takes no more work, or nil.
func (c *Chain) usableLocked() error {
	switch {
	case c.fatal != nil:
		return c.fatal
	case c.closed:
		return ErrClosed
	}
	return nil
}

// acquire registers a user of the database, which Close waits for; every
// successful acquire is paired with c.users.Done.
func (c *Chain) acquire() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	c.users.Add(1)
	return nil
}

// stopErr is why a wait ended because the producer stopped.
func (c *Chain) stopErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal != nil {
		return c.fatal
	}
	return ErrClosed
}

// run is the block producer, owned by the chain: Close stops it.
func (c *Chain) run() {
	defer close(c.stopped)
	t := time.NewTicker(c.opts.BlockInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := c.produceBlock(); err != nil {
				c.stop(err)
				return
			}
		case <-c.done:
			// Commit the mempool, so that a clean shutdown loses no tx
			// that the chain accepted.
			for {
				c.mu.Lock()
				n := len(c.pending)
				c.mu.Unlock()
				if n == 0 {
					return
				}
				if err := c.produceBlock(); err != nil {
					c.stop(err)
					return
				}
			}
		}
	}
}

func (c *Chain) stop(err error) {
	c.log.Error("simchain stopped: cannot commit a block", "err", err)
	c.mu.Lock()
	c.fatal = err
	c.mu.Unlock()
}

// produceBlock takes txs from the mempool, executes them, and commits the
// block with everything it changes in one synced batch. Only the producer
// writes to the database, so execution can read it without locks; c.mu is
// held only to take the txs and to publish the result, so submissions go
// on during the write.
func (c *Chain) produceBlock() error {
	c.mu.Lock()
	n := min(len(c.pending), c.opts.MaxTxsPerBlock)
	txs := make([]*tx, n)
	copy(txs, c.pending)
	clear(c.pending[:n]) // let the taken txs be collected once waiters are done
	c.pending = c.pending[n:]
	prev := c.head
	c.mu.Unlock()

	next := prev
	next.height++
	next.timeMs = max(prev.timeMs+1, uint64(c.opts.Now().UnixMilli()))
	next.hash = blockHash(c.opts.ID, prev.hash, next.height, txs)
	if n > 0 {
		next.nonce = txs[n-1].nonce
	}

	b := c.db.NewBatch()
	defer b.Close()
	if err := b.Set(blockKey(next.height), encodeBlock(prev.hash, next.hash, txs), nil); err != nil {
		return fmt.Errorf("simchain: block %d: %w", next.height, err)
	}
	seqs := make(map[string]uint64)
	deliveries := make(map[[32]byte]*DeliveryRecord)
	delivered := make(map[[32]byte]*tx) // a tx of each id in deliveries: its pipe and sequence
	var known *pebble.Iterator          // the block's delivery lookups, opened on the first
	defer func() {
		if known != nil {
			known.Close()
		}
	}()
	for _, t := range txs {
		switch t.kind {
		case txRequest:
			seqs[t.pipe] = t.seq
			next.stats.requests++
			rec := requestRecord{height: next.height, txHash: t.hash, id: t.id}
			if err := b.Set(requestKey(t.pipe, t.seq), rec.encode(), nil); err != nil {
				return fmt.Errorf("simchain: block %d: %w", next.height, err)
			}
		case txDeliver:
			if known == nil {
				var err error
				if known, err = c.db.NewIter(&pebble.IterOptions{UseL6Filters: true}); err != nil {
					return fmt.Errorf("simchain: block %d: %w", next.height, err)
				}
			}
			if err := c.execDelivery(t, next.height, next.timeMs, known, deliveries, &next.stats); err != nil {
				return err
			}
			delivered[t.id] = t
		case txRollback:
			rec := rollbackRecord{height: next.height, txHash: t.hash, reason: t.reason}
			if err := b.Set(rollbackKey(t.pipe, t.seq), rec.encode(), nil); err != nil {
				return fmt.Errorf("simchain: block %d: %w", next.height, err)
			}
			next.stats.rolledBack++
		}
	}
	for pipe, seq := range seqs {
		if err := b.Set(seqKey(pipe), binary.BigEndian.AppendUint64(nil, seq), nil); err != nil {
			return fmt.Errorf("simchain: block %d: %w", next.height, err)
		}
	}
	for id, rec := range deliveries {
		// The execution index holds a copy of the record, written in the
		// same batch, so that a range read needs no lookup per packet.
		v, t := rec.encode(), delivered[id]
		if err := b.Set(deliveryKey(id), v, nil); err != nil {
			return fmt.Errorf("simchain: block %d: %w", next.height, err)
		}
		if err := b.Set(executionKey(t.pipe, t.seq), v, nil); err != nil {
			return fmt.Errorf("simchain: block %d: %w", next.height, err)
		}
	}
	if err := b.Set(keyHead, next.encode(), nil); err != nil {
		return fmt.Errorf("simchain: block %d: %w", next.height, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("simchain: commit block %d: %w", next.height, err)
	}

	c.mu.Lock()
	c.head = next
	for _, t := range txs {
		if t.kind == txRollback {
			delete(c.pendingRollbacks, string(rollbackKey(t.pipe, t.seq)))
		}
	}
	close(c.blockCh)
	c.blockCh = make(chan struct{})
	c.mu.Unlock()
	if n > 0 {
		c.log.Debug("block", "height", next.height, "txs", n)
	}
	return nil
}

// execDelivery runs the destination contract on one delivery tx and
// updates the packet's record (in this block's set, read from the database
// on first touch). The chain records every execution: it does not
// deduplicate, the relay does.
//
// A packet whose timeout_height or timeout_unix_ms has passed at this
// block (height >= timeout_height, block time >= timeout_unix_ms: IBC's
// rule) is not executed: the chain records a TIMED_OUT refusal in the same
// block instead. Heights and block times only grow, so once a packet can
// no longer execute it never will, and a source that proves the packet
// absent at a block past its timeout may roll it back safely.
func (c *Chain) execDelivery(t *tx, height, timeMs uint64, known *pebble.Iterator, recs map[[32]byte]*DeliveryRecord, s *counters) error {
	res := subchain.Delivery{PacketID: t.id, Status: amdp.StatusDelivered, TxHash: t.hash[:], Height: height}
	switch {
	case t.timeoutHeight > 0 && height >= t.timeoutHeight:
		res.Status = amdp.StatusTimedOut
		res.Reason = fmt.Sprintf("timed out: block %d is at or past timeout_height %d", height, t.timeoutHeight)
	case t.timeoutMs > 0 && timeMs >= t.timeoutMs:
		res.Status = amdp.StatusTimedOut
		res.Reason = fmt.Sprintf("timed out: block %d's time %d ms is at or past timeout_unix_ms %d", height, timeMs, t.timeoutMs)
	case len(c.opts.RejectPrefix) > 0 && bytes.HasPrefix(t.payload, c.opts.RejectPrefix):
		res.Status = amdp.StatusRejected
		res.Reason = fmt.Sprintf("destination contract refuses payloads that start with %x", c.opts.RejectPrefix)
	default:
		res.ResultHash = ResultHash(t.id, t.payload)
	}
	t.res = res

	rec, ok := recs[t.id]
	if !ok {
		v, found, err := seek(known, deliveryKey(t.id))
		if err != nil {
			return err
		}
		if found {
			r, err := decodeDeliveryRecord(v)
			if err != nil {
				return err
			}
			rec = &r
		}
	}
	switch {
	case rec == nil:
		rec = &DeliveryRecord{Status: res.Status, TxHash: res.TxHash, Height: height, ResultHash: res.ResultHash, Reason: res.Reason}
		switch res.Status {
		case amdp.StatusDelivered:
			s.delivered++
		case amdp.StatusTimedOut:
			s.timedOut++
		default:
			s.rejected++
		}
	case res.Status == amdp.StatusTimedOut:
		// Not executed: a late copy of a packet already recorded. Its
		// record stays the first outcome.
		recs[t.id] = rec
		return nil
	default:
		s.duplicates++
	}
	rec.Count++
	recs[t.id] = rec
	return nil
}
