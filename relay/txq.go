package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// txq is the relay's only sender of governance txs: anchors, confirmations
// and exceptions from the router, the mesh, the verifier and the
// compensator go through it, so one account's nonces never race. Each
// round it packs what is waiting into one tx per kind (many batches per
// anchor tx: no per-packet chain tx) and waits for them to commit.
type txq struct {
	gov    *govchain.Client
	signer crypto.Signer
	log    *slog.Logger
	in     chan *txItem
	every  time.Duration
	// slowEvery paces the anchors nobody waits for (receipts,
	// confirmations): packing more batches per tx is what keeps the chain
	// out of the per-packet business. Opens go every round: strict
	// batches wait for them.
	slowEvery time.Duration
	lastSlow  time.Time

	// Rounds are pipelined: a round's txs are broadcast in nonce order,
	// then waited for in the background while later rounds go out, up to
	// maxRounds at once. Waiting for each round before the next would
	// make an anchor queued during a round wait for that round's block
	// and then for its own.
	results   chan []*txItem // what finished rounds give back to retry
	rounds    int            // rounds in flight; Run's goroutine only
	maxRounds int

	maxTries int // of an item whose precondition is not met yet; maxTries unless a test says

	opens, receipts, confirms, exceptions *counter
	openLatency                           atomic.Uint64 // µs from queueing an open anchor to its commit, summed
}

type counter struct{ txs, items atomic.Uint64 }

type txItem struct {
	open      *govchain.BatchOpen
	receipts  *govchain.BatchReceipts
	confirm   *govchain.BatchRef
	exception *govchain.MsgTxException
	// packets are the packets an anchor or confirmation stands for: if
	// governance refuses it for good and nobody waits for it, they go
	// to MANUAL with the refusal (nothing is left in neither state).
	packets []*govchain.PacketRef
	// settled, if set, is called once the item is done for good: committed,
	// refused as existing, or its packets' MANUAL record committed in its
	// place. Not when the queue stops first: the caller's durable record
	// then brings the item back on the next start (receipt anchors: the
	// mesh's owed records).
	settled   func()
	done      chan error // nil: nobody waits
	tries     int
	notBefore time.Time
	solo      bool // goes in a tx of its own (after its group was refused)
	queued    time.Time
}

// maxTries bounds retries of an item whose precondition is not met yet
// (receipts before the open anchor): ~2 minutes at the retry spacing.
const (
	maxTries   = 600
	retryAfter = 200 * time.Millisecond
	maxPerTx   = 512
)

func newTxq(gov *govchain.Client, signer crypto.Signer, log *slog.Logger, every time.Duration) *txq {
	if every <= 0 {
		every = 50 * time.Millisecond
	}
	const maxRounds = 2
	return &txq{gov: gov, signer: signer, log: log, in: make(chan *txItem, 4096), every: every, slowEvery: 10 * every,
		results: make(chan []*txItem, maxRounds), maxRounds: maxRounds, maxTries: maxTries,
		opens: &counter{}, receipts: &counter{}, confirms: &counter{}, exceptions: &counter{}}
}

// submit queues it; it blocks while the queue is full (backpressure).
func (q *txq) submit(ctx context.Context, it *txItem) error {
	it.queued = time.Now()
	select {
	case q.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *txq) wait(ctx context.Context, it *txItem) error {
	it.done = make(chan error, 1)
	if err := q.submit(ctx, it); err != nil {
		return err
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// QueueOpens queues the open anchors of one router cycle, in the order
// given (batch order), and returns without waiting for them
// (router.Anchorer). Queued from the router's loop, a relay's opens reach
// the queue, and so the chain, in batch order: a pipe's later range never
// goes out ahead of its earlier one just because its goroutine ran first.
func (q *txq) QueueOpens(ctx context.Context, opens []*govchain.BatchOpen) (func(context.Context) error, error) {
	items := make([]*txItem, 0, len(opens))
	for _, o := range opens {
		it := &txItem{open: o, done: make(chan error, 1)}
		if err := q.submit(ctx, it); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return func(ctx context.Context) error {
		var errs []error
		for _, it := range items {
			select {
			case err := <-it.done:
				errs = append(errs, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return errors.Join(errs...)
	}, nil
}

// OpenBatch anchors a batch and returns once committed (the compensator's
// resends).
func (q *txq) OpenBatch(ctx context.Context, o *govchain.BatchOpen) error {
	return q.wait(ctx, &txItem{open: o})
}

// Exception records a transition and returns once committed. A record of
// more packets than one tx holds goes in several, one after the other: a
// batch's worth of packets (4096 of them) made a 73 KB tx, which the chain
// refused for its size, and nothing was recorded.
func (q *txq) Exception(ctx context.Context, m *govchain.MsgTxException) error {
	for _, part := range splitException(m) {
		if err := q.wait(ctx, &txItem{exception: part}); err != nil {
			return err
		}
	}
	return nil
}

// maxExceptionRefs bounds the bytes of packet references in one exception
// tx: the chain's default tx limit is 64 KiB (govchain.DefaultMaxTxBytes),
// and the signature, the envelope and the reason fit in what is left.
const maxExceptionRefs = 32 << 10

// splitException cuts m into messages whose packet lists stay within
// maxExceptionRefs, each with m's state and reason, in m's order.
func splitException(m *govchain.MsgTxException) []*govchain.MsgTxException {
	var out []*govchain.MsgTxException
	cur := &govchain.MsgTxException{State: m.State, Reason: m.Reason}
	size := 0
	for _, r := range m.Packets {
		n := proto.Size(r) + 4 // the field's tag and length
		if len(cur.Packets) > 0 && size+n > maxExceptionRefs {
			out = append(out, cur)
			cur, size = &govchain.MsgTxException{State: m.State, Reason: m.Reason}, 0
		}
		cur.Packets = append(cur.Packets, r)
		size += n
	}
	return append(out, cur)
}

// Run packs and submits until ctx ends.
func (q *txq) Run(ctx context.Context) error {
	var pending []*txItem
	t := time.NewTicker(q.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for ; q.rounds > 0; q.rounds-- {
				pending = append(pending, <-q.results...)
			}
			for _, it := range pending {
				// Not settled: the caller's durable record (the
				// verifier's backlog, the mesh's owed receipts) brings
				// the item back after a restart.
				it.finish(ctx.Err())
			}
			return nil
		case it := <-q.in:
			pending = append(pending, it)
			continue
		case keep := <-q.results:
			q.rounds--
			pending = append(pending, keep...)
			continue
		case <-t.C:
		}
		if q.rounds >= q.maxRounds {
			continue // the chain is behind: let the pending items pack up
		}
		// Drain what else is waiting, without blocking.
		for more := true; more; {
			select {
			case it := <-q.in:
				pending = append(pending, it)
			default:
				more = false
			}
		}
		if len(pending) == 0 {
			continue
		}
		pending = q.round(ctx, pending)
	}
}

func (it *txItem) finish(err error) {
	if err == nil && it.settled != nil {
		it.settled()
	}
	if it.done != nil {
		it.done <- err
	}
}

// round broadcasts one tx per kind of the due items, starts waiting for
// them in the background, and returns the items to keep for later rounds.
// What the background wait gives back (items of refused or failed txs)
// arrives on q.results.
func (q *txq) round(ctx context.Context, pending []*txItem) []*txItem {
	now := time.Now()
	slow := now.Sub(q.lastSlow) >= q.slowEvery
	if slow {
		q.lastSlow = now
	}
	var keep []*txItem
	var opens, receipts, confirms, excs, solos []*txItem
	for _, it := range pending {
		switch {
		case now.Before(it.notBefore):
			keep = append(keep, it)
		case it.solo:
			solos = append(solos, it)
		case it.open != nil && len(opens) < maxPerTx:
			opens = append(opens, it)
		case it.receipts != nil && slow && len(receipts) < maxPerTx:
			receipts = append(receipts, it)
		case it.confirm != nil && slow && len(confirms) < maxPerTx:
			confirms = append(confirms, it)
		case it.exception != nil && len(excs) < 1:
			excs = append(excs, it) // exceptions carry their own packet lists
		default:
			keep = append(keep, it)
		}
	}
	type group struct {
		items []*txItem
		msg   govchain.Signed
		kind  *counter
	}
	var groups []group
	if len(opens) > 0 {
		// In batch order: a pipe's later range must not reach the chain
		// before its earlier one (a gap is refused).
		sort.SliceStable(opens, func(i, j int) bool { return opens[i].open.BatchSeq < opens[j].open.BatchSeq })
		m := &govchain.MsgOpenBatches{}
		for _, it := range opens {
			m.Batches = append(m.Batches, it.open)
		}
		groups = append(groups, group{opens, govchain.Signed{Signer: q.signer, Msg: m}, q.opens})
	}
	if len(receipts) > 0 {
		m := &govchain.MsgAnchorReceipts{}
		for _, it := range receipts {
			m.Batches = append(m.Batches, it.receipts)
		}
		groups = append(groups, group{receipts, govchain.Signed{Signer: q.signer, Msg: m}, q.receipts})
	}
	if len(confirms) > 0 {
		m := &govchain.MsgConfirmBatches{}
		for _, it := range confirms {
			m.Batches = append(m.Batches, it.confirm)
		}
		groups = append(groups, group{confirms, govchain.Signed{Signer: q.signer, Msg: m}, q.confirms})
	}
	for _, it := range append(excs, solos...) {
		groups = append(groups, group{[]*txItem{it}, govchain.Signed{Signer: q.signer, Msg: it.msg()}, it.kind(q)})
	}
	if len(groups) == 0 {
		return keep
	}
	// Broadcast all (in nonce order), then wait for each in the background.
	// The signed bytes are kept: a node that restarts loses its mempool,
	// and the wait hands them to it again (WaitTxResend); a copy refused
	// for its nonce (a later tx got in first) comes back as ErrBadNonce,
	// which failed retries at once.
	raws := make([][]byte, len(groups))
	errs := make([]error, len(groups))
	for i, g := range groups {
		if raws[i], errs[i] = q.gov.Sign(ctx, g.msg.Signer, g.msg.Msg); errs[i] == nil {
			_, errs[i] = q.gov.BroadcastRaw(ctx, g.msg.Signer, raws[i])
		}
	}
	q.rounds++
	go func() {
		var back []*txItem
		for i, g := range groups {
			if errs[i] == nil {
				_, errs[i] = q.gov.WaitTxResend(ctx, raws[i])
			}
			if errs[i] == nil {
				g.kind.txs.Add(1)
				g.kind.items.Add(uint64(len(g.items)))
				now := time.Now()
				for _, it := range g.items {
					if it.open != nil {
						q.openLatency.Add(uint64(now.Sub(it.queued).Microseconds()))
					}
					it.finish(nil)
				}
				continue
			}
			back = append(back, q.failed(g.items, errs[i])...)
		}
		q.results <- back // never blocks: at most maxRounds in flight
	}()
	return keep
}

// failed decides what happens to the items of a refused tx: a refusal of
// several is retried one by one (so one bad item cannot block the rest);
// "exists" means done; "not found" waits for its precondition.
func (q *txq) failed(items []*txItem, err error) []*txItem {
	var te *govchain.TxError
	// A nonce refusal means the tx did not apply (another tx of this
	// signer took the nonce): as good as not sent, so retried.
	if !errors.As(err, &te) || errors.Is(te, govchain.ErrBadNonce) {
		// Infrastructure: try again next round.
		if !errors.Is(err, context.Canceled) {
			q.log.Warn("governance tx failed; retrying", "err", err)
		}
		for _, it := range items {
			it.notBefore = time.Now().Add(retryAfter)
		}
		return items
	}
	if len(items) > 1 {
		for _, it := range items {
			it.solo = true // each goes alone from now on
		}
		return items
	}
	it := items[0]
	switch {
	case errors.Is(te, govchain.ErrExists):
		it.finish(nil)
		return nil
	case (errors.Is(te, govchain.ErrNotFound) || errors.Is(te, govchain.ErrBadState)) && it.tries < q.maxTries:
		it.tries++
		it.notBefore = time.Now().Add(retryAfter)
		return []*txItem{it}
	}
	q.log.Error("governance refused a relay tx", "tries", it.tries+1, "err", te)
	it.finish(fmt.Errorf("governance refused: %w", te))
	if it.done != nil || len(it.packets) == 0 {
		return nil // the waiter decides (the compensator retries, the verifier logs)
	}
	// Nobody waits for a receipt anchor or a confirmation: its packets go
	// to a person with the refusal, through this queue.
	reason := fmt.Sprintf("governance refused the %s after %d tries: %v", it.what(), it.tries+1, te)
	if len(reason) > 200 {
		reason = reason[:200]
	}
	// The MANUAL record settles the item's duty in its place, once every
	// part of it committed.
	parts := splitException(&govchain.MsgTxException{Packets: it.packets, State: govchain.PacketState_PACKET_MANUAL, Reason: reason})
	settled := it.settled
	if settled != nil && len(parts) > 1 {
		left := new(atomic.Int32)
		left.Store(int32(len(parts)))
		settled = func() {
			if left.Add(-1) == 0 {
				it.settled()
			}
		}
	}
	out := make([]*txItem, len(parts))
	for i, m := range parts {
		out[i] = &txItem{exception: m, settled: settled, queued: time.Now()}
	}
	return out
}

func (it *txItem) what() string {
	switch {
	case it.receipts != nil:
		return "receipt anchor"
	case it.confirm != nil:
		return "batch confirmation"
	}
	return "tx"
}

// msg is the tx message of one item on its own.
func (it *txItem) msg() proto.Message {
	switch {
	case it.open != nil:
		return &govchain.MsgOpenBatches{Batches: []*govchain.BatchOpen{it.open}}
	case it.receipts != nil:
		return &govchain.MsgAnchorReceipts{Batches: []*govchain.BatchReceipts{it.receipts}}
	case it.confirm != nil:
		return &govchain.MsgConfirmBatches{Batches: []*govchain.BatchRef{it.confirm}}
	}
	return it.exception
}

func (it *txItem) kind(q *txq) *counter {
	switch {
	case it.open != nil:
		return q.opens
	case it.receipts != nil:
		return q.receipts
	case it.confirm != nil:
		return q.confirms
	}
	return q.exceptions
}

// Confirm queues a batch confirmation of packets (verifier.Recorder);
// nobody waits for the commit. It blocks while the queue is full: a
// dropped confirmation would leave its batch neither confirmed nor with a
// person, so the verifier slows down instead.
func (q *txq) Confirm(ctx context.Context, ref *govchain.BatchRef, packets []*govchain.PacketRef, settled func()) error {
	return q.submit(ctx, &txItem{confirm: ref, packets: packets, settled: settled})
}

// AnchorReceipts queues a destination receipt anchor of packets; it blocks
// while the queue is full, which slows the receiving side (backpressure).
// Refused for good, its packets go to MANUAL (see failed). settled (may be
// nil) is called once the anchor, or the MANUAL record, is committed, or
// governance says the receipts are anchored already (CodeExists).
func (q *txq) AnchorReceipts(ctx context.Context, r *govchain.BatchReceipts, packets []*govchain.PacketRef, settled func()) error {
	return q.submit(ctx, &txItem{receipts: r, packets: packets, settled: settled})
}

// TxStats are the governance txs a relay sent, by kind.
type TxStats struct {
	OpenTxs, OpenBatches, ReceiptTxs, ReceiptBatches, ConfirmTxs, ConfirmBatches, ExceptionTxs uint64
	OpenLatencyMicros                                                                          uint64 // summed over OpenBatches: queued to committed
}

func (q *txq) stats() TxStats {
	return TxStats{q.opens.txs.Load(), q.opens.items.Load(), q.receipts.txs.Load(), q.receipts.items.Load(),
		q.confirms.txs.Load(), q.confirms.items.Load(), q.exceptions.txs.Load(), q.openLatency.Load()}
}
