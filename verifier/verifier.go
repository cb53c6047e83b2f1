package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Finder looks a delivery up on a destination chain; subchain.Chain
// satisfies it.
type Finder interface {
	FindDelivery(ctx context.Context, packetID [32]byte) (subchain.Delivery, bool, error)
}

// Mismatch is a packet whose receipt the anchor or the chain contradicts.
type Mismatch struct {
	Pipe   string
	Seq    uint64
	Reason string
}

// Check compares a batch's receipts with their committed anchor and with
// the destination chain's records (find): deliveries and refusals alike. It returns the mismatches; none
// means the batch may be confirmed. It does no I/O.
func Check(b *amdp.Batch, rb *amdp.ReceiptBatch, a *govchain.BatchAnchor, find func(id [32]byte) (subchain.Delivery, bool)) []Mismatch {
	var out []Mismatch
	all := func(reason string) []Mismatch {
		for _, p := range b.Packets {
			out = append(out, Mismatch{p.PipeId, p.Sequence, reason})
		}
		return out
	}
	switch {
	case !bytes.Equal(a.ReceiptRoot, rb.Header.MerkleRoot):
		return all("the receipt anchor commits to other receipts than the relay returned")
	case len(rb.Receipts) != len(b.Packets) || len(a.Statuses) != len(b.Packets):
		return all("receipts, anchor statuses and packets differ in number")
	}
	for i, p := range b.Packets {
		r := rb.Receipts[i]
		id := p.ID()
		switch {
		case !bytes.Equal(r.PacketId, id[:]):
			out = append(out, Mismatch{p.PipeId, p.Sequence, "receipt is for another packet"})
			continue
		case byte(r.Status) != a.Statuses[i]:
			out = append(out, Mismatch{p.PipeId, p.Sequence, "anchored status differs from the receipt"})
			continue
		}
		d, ok := find(id)
		if r.Status != amdp.StatusDelivered {
			// A refusal is checked like a delivery (DESIGN §5a): the
			// destination chain must hold the same refusal, or the
			// receipt is false and nothing is rolled back on its word.
			switch {
			case !ok:
				out = append(out, Mismatch{p.PipeId, p.Sequence, "destination chain holds no record of the refusal"})
			case d.Status == amdp.StatusDelivered:
				out = append(out, Mismatch{p.PipeId, p.Sequence, fmt.Sprintf("destination chain executed the packet the receipt refuses (height %d)", d.Height)})
			case d.Status != r.Status || !bytes.Equal(d.TxHash, r.DestTxHash) || d.Height != r.DestHeight:
				out = append(out, Mismatch{p.PipeId, p.Sequence, fmt.Sprintf("destination chain's refusal differs from the receipt: chain has height %d", d.Height)})
			}
			continue
		}
		switch {
		case !ok:
			out = append(out, Mismatch{p.PipeId, p.Sequence, "destination chain has no such delivery"})
		case d.Status != amdp.StatusDelivered:
			out = append(out, Mismatch{p.PipeId, p.Sequence, "destination chain recorded a refusal"})
		case !bytes.Equal(d.TxHash, r.DestTxHash) || d.Height != r.DestHeight:
			out = append(out, Mismatch{p.PipeId, p.Sequence, fmt.Sprintf("destination tx differs: chain has height %d", d.Height)})
		case !bytes.Equal(d.ResultHash[:], r.ResultHash):
			out = append(out, Mismatch{p.PipeId, p.Sequence, "result hash differs from the chain's"})
		}
	}
	return out
}

// Recorder records the verifier's findings on the governance chain.
type Recorder interface {
	// Confirm queues the confirmation of a batch of packets; an error
	// means it was not queued (ctx ended). settled is called once the
	// confirmation is committed, or refused for good and its packets'
	// MANUAL record committed instead; never if the relay stops first.
	Confirm(ctx context.Context, ref *govchain.BatchRef, packets []*govchain.PacketRef, settled func()) error
	Exception(ctx context.Context, m *govchain.MsgTxException) error
}

// Anchors reads proven records of the governance chain (*govchain.Client
// satisfies it). An error wrapping govchain.ErrNoRecord means not there
// yet; any other error means the read could not be proven or made.
type Anchors interface {
	Get(ctx context.Context, key []byte, m proto.Message) (int64, error)
}

// Config configures a Verifier.
type Config struct {
	Gov Anchors
	// Destination returns the chain behind a destination relay; false
	// means this verifier cannot reach it (anchors are still proven, and
	// the batch stays delivered, unconfirmed).
	Destination func(relayID string) (Finder, bool)
	Recorder    Recorder
	Logger      *slog.Logger
	// AnchorTimeout bounds the wait for a receipt anchor. Default 2 min.
	AnchorTimeout time.Duration
	Workers       int // default 64: they mostly wait for anchors
	// Attempts bounds the checks of one batch that fail for want of
	// evidence (a proof error, an anchor that does not come, a
	// destination chain that does not answer); after the last, its
	// packets go to MANUAL with the reason. Default 5.
	Attempts int
	// Backoff is the wait before the second attempt, doubled after each
	// failed one up to 30s. Default 1s.
	Backoff time.Duration
	// Dir holds the backlog: every batch taken and not yet settled, so
	// that a verifier killed mid-check checks it again when it starts.
	// "" keeps the backlog in memory only (tests of the checks).
	Dir string
	// Limits bound the stored batches when they are read back. Default
	// amdp.DefaultLimits().
	Limits amdp.Limits
}

// Verifier checks batches in the background.
type Verifier struct {
	cfg      Config
	in       chan item
	log      *slog.Logger
	backlog  *backlog // nil: Config.Dir was ""
	restored []item   // the backlog found at New, checked first by Run
	corrupt  int

	confirmed, confirmedPackets, mismatched, unreachable atomic.Uint64
	retried, gaveUp                                      atomic.Uint64
	warnOnce                                             sync.Once
}

type item struct {
	b  *amdp.Batch
	rb *amdp.ReceiptBatch
}

// Stats are a verifier's counters: batches confirmed and the delivered
// packets in them, packets contradicted, batches it could not check
// (destination unreachable), checks retried, and batches given up on
// after the last attempt (their packets sent to MANUAL).
type Stats struct {
	Confirmed, ConfirmedPackets, Mismatched, Unverifiable, Retried, GaveUp uint64
	// Restored is how many batches the backlog held at start (checked
	// again), Corrupt how many of its records did not decode.
	Restored, Corrupt uint64
}

// New makes a verifier.
func New(cfg Config) (*Verifier, error) {
	if cfg.Gov == nil || cfg.Recorder == nil {
		return nil, errors.New("verifier: Gov and Recorder are required")
	}
	if cfg.Destination == nil {
		cfg.Destination = func(string) (Finder, bool) { return nil, false }
	}
	if cfg.AnchorTimeout <= 0 {
		cfg.AnchorTimeout = 2 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limits == (amdp.Limits{}) {
		cfg.Limits = amdp.DefaultLimits()
	}
	v := &Verifier{cfg: cfg, in: make(chan item, 1024), log: cfg.Logger}
	if cfg.Dir != "" {
		q, err := openBacklog(cfg.Dir, cfg.Logger)
		if err != nil {
			return nil, err
		}
		if v.restored, v.corrupt, err = q.load(cfg.Limits); err != nil {
			return nil, errors.Join(fmt.Errorf("verifier: read backlog: %w", err), q.close())
		}
		v.backlog = q
		if len(v.restored) > 0 {
			v.log.Warn("verifier: checking again the batches not settled before the stop", "batches", len(v.restored))
		}
	}
	return v, nil
}

// Close closes the backlog. Call it after Run returned.
func (v *Verifier) Close() error {
	if v.backlog == nil {
		return nil
	}
	return v.backlog.close()
}

// Stats returns the counters.
func (v *Verifier) Stats() Stats {
	return Stats{v.confirmed.Load(), v.confirmedPackets.Load(), v.mismatched.Load(), v.unreachable.Load(),
		v.retried.Load(), v.gaveUp.Load(), uint64(len(v.restored)), uint64(v.corrupt)}
}

// Enqueue hands over a receipted batch; it blocks while the queue is full.
// With a backlog, the batch is on disk when Enqueue returns: the caller
// may then forget it (commit its offsets).
func (v *Verifier) Enqueue(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error {
	// The check needs the packets' names, not their payloads: the queue
	// and the backlog hold the skeleton, a tenth of the batch's bytes.
	b = b.Skeleton()
	if v.backlog != nil {
		if err := v.backlog.put(item{b, rb}); err != nil {
			return err
		}
	}
	select {
	case v.in <- item{b, rb}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run verifies until ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if len(v.restored) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, it := range v.restored {
				select {
				case v.in <- it:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for range v.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case it := <-v.in:
					v.settle(ctx, it)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// settle checks a batch until the check completes, retrying with backoff
// what fails for want of evidence; after the last attempt the batch's
// packets go to MANUAL with the last error as the reason, so that no
// batch is left neither confirmed nor with a person (DESIGN §5a).
func (v *Verifier) settle(ctx context.Context, it item) {
	h := it.b.Header
	var err error
	retry := backoff.Policy{Min: v.cfg.Backoff, Max: 30 * time.Second}
	for attempt := 1; ; attempt++ {
		var confirming bool
		if confirming, err = v.verify(ctx, it); err == nil || ctx.Err() != nil {
			if err == nil && !confirming {
				v.forget(h.BatchSeq)
			}
			return
		}
		if attempt >= v.cfg.Attempts {
			break
		}
		v.retried.Add(1)
		v.log.Warn("verification incomplete; retrying", "batch_seq", h.BatchSeq, "attempt", attempt, "err", err)
		if backoff.Wait(ctx, retry.Delay(attempt)) != nil {
			return
		}
	}
	v.gaveUp.Add(1)
	refs := Refs(it.b)
	reason := fmt.Sprintf("verification gave up after %d attempts: %v", v.cfg.Attempts, err)
	if len(reason) > 200 {
		reason = reason[:200]
	}
	v.log.Error("batch could not be verified; packets go to a person", "from", h.FromRelay, "batch_seq", h.BatchSeq,
		"packets", len(refs), "err", err)
	rerr := v.cfg.Recorder.Exception(ctx, &govchain.MsgTxException{Packets: refs, State: govchain.PacketState_PACKET_MANUAL,
		Reason: reason})
	if rerr != nil {
		if ctx.Err() == nil {
			v.log.Error("MANUAL entry of an unverifiable batch not recorded; it stays in the backlog", "batch_seq", h.BatchSeq, "err", rerr)
		}
		return
	}
	v.forget(h.BatchSeq)
}

// forget removes a settled batch from the backlog.
func (v *Verifier) forget(seq uint64) {
	if v.backlog != nil {
		v.backlog.done(seq)
	}
}

// verify checks one batch. nil with confirming: the confirmation is
// queued, and the batch leaves the backlog when it is settled; nil
// without: the check is settled now (contradictions recorded, an
// unreachable destination, a batch confirmed before a restart).
func (v *Verifier) verify(ctx context.Context, it item) (confirming bool, err error) {
	h := it.b.Header
	a, err := v.waitAnchor(ctx, h.FromRelay, h.BatchSeq)
	if err != nil {
		return false, err
	}
	if a.ConfirmedHeight != 0 {
		return false, nil // confirmed before this relay stopped; a restored batch
	}
	dest, ok := v.cfg.Destination(h.ToRelay)
	if !ok {
		v.unreachable.Add(1)
		v.warnOnce.Do(func() {
			v.log.Warn("destination chain not reachable from this verifier: receipts proven against anchors, not confirmed", "to", h.ToRelay)
		})
		return false, nil
	}
	found := map[[32]byte]subchain.Delivery{}
	delivered := 0
	for i, p := range it.b.Packets {
		if i < len(it.rb.Receipts) {
			if it.rb.Receipts[i].Status == amdp.StatusDelivered {
				delivered++
			}
			d, ok, err := dest.FindDelivery(ctx, p.ID())
			if err != nil {
				return false, fmt.Errorf("destination lookup: %w", err)
			}
			if ok {
				found[p.ID()] = d
			}
		}
	}
	mism := Check(it.b, it.rb, a, func(id [32]byte) (subchain.Delivery, bool) { d, ok := found[id]; return d, ok })
	if len(mism) == 0 {
		v.confirmed.Add(1)
		v.confirmedPackets.Add(uint64(delivered))
		err := v.cfg.Recorder.Confirm(ctx, &govchain.BatchRef{FromRelay: h.FromRelay, BatchSeq: h.BatchSeq}, Refs(it.b),
			func() { v.forget(h.BatchSeq) })
		return err == nil, err
	}
	v.mismatched.Add(uint64(len(mism)))
	v.log.Error("receipts contradicted; packets go to a person", "batch_seq", h.BatchSeq, "packets", len(mism), "first", mism[0].Reason)
	byReason := map[string][]*govchain.PacketRef{}
	for _, m := range mism {
		byReason[m.Reason] = append(byReason[m.Reason], &govchain.PacketRef{Pipe: m.Pipe, Seq: m.Seq})
	}
	for reason, refs := range byReason {
		err := v.cfg.Recorder.Exception(ctx, &govchain.MsgTxException{Packets: refs, State: govchain.PacketState_PACKET_MANUAL,
			Reason: "verification: " + reason})
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// Refs names a batch's packets, in batch order, as governance txs do.
func Refs(b *amdp.Batch) []*govchain.PacketRef {
	refs := make([]*govchain.PacketRef, len(b.Packets))
	for i, p := range b.Packets {
		refs[i] = &govchain.PacketRef{Pipe: p.PipeId, Seq: p.Sequence}
	}
	return refs
}

// waitAnchor polls, with proofs, until the batch's receipts are anchored.
func (v *Verifier) waitAnchor(ctx context.Context, from string, seq uint64) (*govchain.BatchAnchor, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.AnchorTimeout)
	defer cancel()
	poll := backoff.Policy{Min: 50 * time.Millisecond, Max: time.Second}
	for n := 1; ; n++ {
		a := &govchain.BatchAnchor{}
		_, err := v.cfg.Gov.Get(ctx, govchain.KeyBatch(from, seq), a)
		if err == nil && a.ReceiptedHeight > 0 {
			return a, nil
		}
		if err != nil && !errors.Is(err, govchain.ErrNoRecord) {
			if errors.Is(err, govchain.ErrProof) {
				return nil, err
			}
		}
		if err := backoff.Wait(ctx, poll.Delay(n)); err != nil {
			return nil, fmt.Errorf("receipt anchor of batch %s/%d: %w", from, seq, err)
		}
	}
}
