package compensator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/kv"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
	"github.com/ccgpmesh/ccgp/router"
)

// Sender resends a sealed batch (mesh.Endpoint satisfies it).
type Sender interface {
	Send(ctx context.Context, to string, b *amdp.Batch) (*amdp.ReceiptBatch, error)
}

// Anchorer commits a resend's open anchor (strict pipes need it).
type Anchorer interface {
	OpenBatch(ctx context.Context, open *govchain.BatchOpen) error
}

// Recorder records transitions on the governance chain and returns once
// they are committed.
type Recorder interface {
	Exception(ctx context.Context, m *govchain.MsgTxException) error
}

// SourceChain rolls requests back (subchain.Chain satisfies it).
type SourceChain interface {
	Rollback(ctx context.Context, pipeID string, seq uint64, reason string) error
}

// Resolutions lists the governance chain's exception records
// (govchain.Client satisfies it).
type Resolutions interface {
	Exceptions(ctx context.Context, state govchain.PacketState) ([]*govchain.TxException, error)
}

// PacketStates reads a packet's records on the governance chain, proven
// (govchain.Client satisfies it): before any rollback the compensator
// refuses to undo a packet that governance records as delivered or
// confirmed.
type PacketStates interface {
	PacketStatus(ctx context.Context, pipe string, seq uint64) (*govchain.PacketStatus, int64, error)
}

// Finder reads a destination chain's own records (subchain.Chain
// satisfies it): the refusal a receipt claims, or a packet's absence at a
// block past its timeout.
type Finder interface {
	FindDelivery(ctx context.Context, packetID [32]byte) (subchain.Delivery, bool, error)
	Head(ctx context.Context) (subchain.Head, error)
}

// Config configures a Compensator.
type Config struct {
	RelayID  string
	Signer   crypto.Signer
	Sender   Sender
	Anchors  Anchorer
	Recorder Recorder
	Source   SourceChain
	Gov      Resolutions
	// States is governance's view of each packet, checked before every
	// rollback. Required.
	States PacketStates
	// Destinations returns the chain behind a destination relay, for the
	// evidence of refusals and timeouts; nil or false means it cannot be
	// reached from here, and such a rollback goes to MANUAL instead.
	Destinations func(relayID string) (Finder, bool)
	// Offences, if set, takes a record of every receipt the destination
	// chain contradicts, against the relay that signed it.
	Offences offence.Reporter
	// RelayOrg names the org that runs a relay, for offence records
	// ("": unknown); nil leaves every offender's org unknown.
	RelayOrg func(relayID string) string
	Dir      string // pebble store of packets under compensation
	Policy   Policy
	Logger   *slog.Logger
	// Record, if set, records a resend's receipts like the router's (the
	// receipts log and the verifier), after the resend returned them.
	Record func(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error
	Tick   time.Duration // default 200ms
	// SendTimeout bounds one resend (mesh sends retry a dead peer until
	// their deadline). Default 30s.
	SendTimeout time.Duration
	PollEvery   time.Duration // resolutions; default 1s
}

// Compensator is the I/O wrapper around Machine.
type Compensator struct {
	cfg  Config
	db   *pebble.DB
	log  *slog.Logger
	kick chan struct{}

	mu    sync.Mutex // guards m and queue
	m     *Machine
	queue [][]Action

	batchSeq                               atomic.Uint64
	rolledBack, delivered, manual, retried atomic.Uint64
	corrupt                                [][32]byte // read-only after New
}

// Stats are the compensator's counters since start. Corrupt counts the
// stored records New could not decode (see Corrupt).
type Stats struct{ RolledBack, DeliveredOnRetry, Manual, Resends, Corrupt uint64 }

// New opens the store and restores the packets under compensation.
func New(cfg Config) (*Compensator, error) {
	if cfg.Signer == nil || cfg.Sender == nil || cfg.Recorder == nil || cfg.Source == nil || cfg.States == nil || cfg.Dir == "" {
		return nil, errors.New("compensator: Signer, Sender, Recorder, Source, States and Dir are required")
	}
	if cfg.Destinations == nil {
		cfg.Destinations = func(string) (Finder, bool) { return nil, false }
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy.Jitter == nil {
		cfg.Policy.Jitter = func(d time.Duration) time.Duration { return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) }
	}
	db, err := kv.Open(cfg.Dir, kv.Options{Log: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("compensator: open store: %w", err)
	}
	// A record that does not decode is kept where it is (never deleted:
	// its packet is still under compensation and a person must decide),
	// reported and counted, and the rest are restored.
	items, bad, err := kv.Scan(db, func(k, v []byte) (*Item, error) {
		var x Item
		err := json.Unmarshal(v, &x)
		if err == nil && (len(k) != len(x.ID) || !bytes.Equal(k, x.ID[:])) {
			err = fmt.Errorf("record under key %x is item %x", k, x.ID)
		}
		return &x, err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	var corrupt [][32]byte
	for _, b := range bad {
		var id [32]byte
		copy(id[:], b.Key)
		corrupt = append(corrupt, id)
		cfg.Logger.Error("compensator: corrupt stored item; left in the store for a person", "packet_id", fmt.Sprintf("%x", b.Key), "err", b.Err)
	}
	c := &Compensator{cfg: cfg, db: db, log: cfg.Logger, kick: make(chan struct{}, 1),
		m: NewMachine(cfg.Policy, items), corrupt: corrupt}
	c.batchSeq.Store(uint64(time.Now().UnixNano()) | 1<<63) // disjoint from the router's
	if len(items) > 0 {
		c.log.Warn("resuming compensation", "packets", len(items))
	}
	return c, nil
}

// Close closes the store.
func (c *Compensator) Close() error { return c.db.Close() }

// Stats returns the counters.
func (c *Compensator) Stats() Stats {
	return Stats{c.rolledBack.Load(), c.delivered.Load(), c.manual.Load(), c.retried.Load(), uint64(len(c.corrupt))}
}

// Corrupt returns the packet ids whose stored records did not decode when
// the store was opened. Their records stay in the store untouched: the
// packet's pipe and sequence are unreadable, so no exception tx can name
// it, and a person must look (the error log names each id).
func (c *Compensator) Corrupt() [][32]byte { return slices.Clone(c.corrupt) }

// Pending returns the packets under compensation.
func (c *Compensator) Pending() []*Item {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Items()
}

func itemOf(p *amdp.Packet, to string) (*Item, error) {
	raw, err := amdp.EncodePacket(nil, p)
	if err != nil {
		return nil, err
	}
	it := &Item{ID: p.ID(), Pipe: p.PipeId, Seq: p.Sequence, To: to, Packet: raw, TimeoutHeight: p.TimeoutHeight}
	if p.TimeoutUnixMs > 0 {
		it.Deadline = time.UnixMilli(int64(p.TimeoutUnixMs))
	}
	return it, nil
}

// Rejected takes the authentic packets that stage 1 refused
// (router.Compensator): durable on return. Their rollback rests on the
// router's verification and on governance's record of the packet, checked
// before it happens.
func (c *Compensator) Rejected(ctx context.Context, rs []router.Rejection) error {
	byReason := map[string][]*Item{}
	for _, r := range rs {
		it, err := itemOf(r.Packet, "")
		if err != nil {
			return err
		}
		it.Evidence = EvidenceSourceRefusal
		reason := "refused at the source relay: " + router.Reason(r.Err)
		byReason[reason] = append(byReason[reason], it)
	}
	return c.take(func() [][]Action {
		var out [][]Action
		for reason, items := range byReason {
			out = append(out, c.m.Refused(items, reason))
		}
		return out
	}, flatten(byReason))
}

// Undeliverable takes a batch whose send budget is spent.
func (c *Compensator) Undeliverable(ctx context.Context, b *amdp.Batch, cause error) error {
	items := make([]*Item, 0, len(b.Packets))
	for _, p := range b.Packets {
		it, err := itemOf(p, b.Header.ToRelay)
		if err != nil {
			return err
		}
		items = append(items, it)
	}
	reason := "destination relay unreachable: " + cause.Error()
	if len(reason) > 200 {
		reason = reason[:200]
	}
	return c.take(func() [][]Action { return [][]Action{c.m.Undelivered(items, reason, time.Now())} }, items)
}

// Receipts takes a receipted batch and compensates the packets the
// destination refused (the relay calls it before recording receipts):
// each refusal is checked against the destination chain before any
// rollback.
func (c *Compensator) Receipts(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error {
	byReason := map[string][]*Item{}
	for i, r := range rb.Receipts {
		if r.Status == amdp.StatusDelivered || i >= len(b.Packets) {
			continue
		}
		it, err := itemOf(b.Packets[i], b.Header.ToRelay)
		if err != nil {
			return err
		}
		if err := it.refusedBy(r); err != nil {
			return err
		}
		reason := "refused by the destination: " + r.Reason
		if len(reason) > 200 {
			reason = reason[:200]
		}
		byReason[reason] = append(byReason[reason], it)
	}
	if len(byReason) == 0 {
		return nil
	}
	return c.take(func() [][]Action {
		var out [][]Action
		for reason, items := range byReason {
			out = append(out, c.m.Refused(items, reason))
		}
		return out
	}, flatten(byReason))
}

func flatten(m map[string][]*Item) []*Item {
	var out []*Item
	for _, v := range m {
		out = append(out, v...)
	}
	return out
}

// take persists items (synced) before anything else, then queues the
// machine's actions and wakes the loop.
func (c *Compensator) take(event func() [][]Action, items []*Item) error {
	// The event first: it gives the items their state (FAILED, proving),
	// and that is what must be on disk when this returns and the router
	// commits the offsets. Saved before it, a record said nothing about
	// the item's state, and one restored from a kill -9 before the
	// event's own Save ran was never acted on again
	// (TestKillSourceRelayCompensating). Saved under c.mu: once the
	// machine holds them, a tick may change them; queued only once saved.
	c.mu.Lock()
	acts := event()
	err := c.save(items)
	if err == nil {
		c.queue = append(c.queue, acts...)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

func (c *Compensator) save(items []*Item) error {
	b := c.db.NewBatch()
	defer b.Close()
	for _, it := range items {
		v, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if err := b.Set(it.ID[:], v, nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("compensator: store: %w", err)
	}
	return nil
}

func (c *Compensator) forget(items []*Item) error {
	b := c.db.NewBatch()
	defer b.Close()
	for _, it := range items {
		if err := b.Delete(it.ID[:], nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// Run performs actions until ctx ends.
func (c *Compensator) Run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	poll := time.NewTicker(c.cfg.PollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-tick.C:
			c.mu.Lock()
			if due := c.m.Due(time.Now()); len(due) > 0 {
				c.queue = append(c.queue, due)
			}
			c.mu.Unlock()
		case <-poll.C:
			c.pollResolutions(ctx)
		}
		c.drain(ctx)
	}
}

// drain performs queued action sequences; a sequence whose step fails for
// want of infrastructure is put back from that step, to try again.
func (c *Compensator) drain(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		seq := c.queue[0]
		c.queue = c.queue[1:]
		c.mu.Unlock()
		for i, a := range seq {
			if err := c.do(ctx, a); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("compensation step failed; will retry", "step", a.Kind, "packets", len(a.Items), "err", err)
				}
				c.mu.Lock()
				c.queue = append(c.queue, seq[i:])
				c.mu.Unlock()
				return
			}
		}
	}
}

func refs(items []*Item) []*govchain.PacketRef {
	out := make([]*govchain.PacketRef, len(items))
	for i, it := range items {
		out[i] = &govchain.PacketRef{Pipe: it.Pipe, Seq: it.Seq}
	}
	return out
}

func (c *Compensator) do(ctx context.Context, a Action) error {
	switch a.Kind {
	case Save:
		return c.save(a.Items)
	case Forget:
		if err := c.forget(a.Items); err != nil {
			return err
		}
		c.mu.Lock()
		c.m.Forget(a.Items)
		c.mu.Unlock()
	case Record:
		err := c.cfg.Recorder.Exception(ctx, &govchain.MsgTxException{Packets: refs(a.Items), State: a.State, Reason: a.Reason})
		var te *govchain.TxError
		if errors.As(err, &te) {
			// A refusal will not change on retry (an unknown pipe, a
			// move the chain does not take): note it. A state recorded
			// again after a restart is not refused: the chain takes it
			// as a no-op.
			c.log.Warn("governance refused a transition", "state", a.State, "packets", len(a.Items), "err", te)
		} else if err != nil {
			return err
		} else {
			c.mu.Lock()
			held := c.m.Recorded(a.Items, a.State)
			c.mu.Unlock()
			// Stored, so that after a kill the store says where the
			// chain stands (Item.Recorded).
			if len(held) > 0 {
				if err := c.save(held); err != nil {
					return err
				}
			}
		}
		switch a.State {
		case govchain.PacketState_PACKET_ROLLED_BACK:
			c.rolledBack.Add(uint64(len(a.Items)))
		case govchain.PacketState_PACKET_MANUAL:
			c.manual.Add(uint64(len(a.Items)))
			c.log.Warn("packets wait for a person (ccgp manual list)", "packets", len(a.Items), "reason", a.Reason)
		case govchain.PacketState_PACKET_DELIVERED:
			c.delivered.Add(uint64(len(a.Items)))
		}
	case Rollback:
		for _, it := range a.Items {
			if err := c.cfg.Source.Rollback(ctx, it.Pipe, it.Seq, a.Reason); err != nil {
				return fmt.Errorf("rollback %s/%d: %w", it.Pipe, it.Seq, err)
			}
		}
	case Prove:
		proofs := make([]Proof, 0, len(a.Items))
		for _, it := range a.Items {
			proofs = append(proofs, c.prove(ctx, it))
		}
		c.mu.Lock()
		c.queue = append(c.queue, c.m.Proved(proofs, time.Now()))
		c.mu.Unlock()
	case Resend:
		c.retried.Add(uint64(len(a.Items)))
		acts := c.resend(ctx, a.Items)
		c.mu.Lock()
		c.queue = append(c.queue, acts)
		c.mu.Unlock()
	}
	return nil
}

// resend seals the items (one destination) into a batch, anchors it, sends
// it, and returns the machine's verdict on the outcome.
func (c *Compensator) resend(ctx context.Context, items []*Item) []Action {
	fail := func(err error) []Action {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.m.Resent(nil, nil, items, err.Error(), time.Now())
	}
	sort.Slice(items, func(i, j int) bool {
		return items[i].Pipe < items[j].Pipe || (items[i].Pipe == items[j].Pipe && items[i].Seq < items[j].Seq)
	})
	b := &amdp.Batch{Header: &amdp.BatchHeader{FromRelay: c.cfg.RelayID, ToRelay: items[0].To, BatchSeq: c.batchSeq.Add(1),
		CreatedUnixMs: uint64(time.Now().UnixMilli())}}
	for _, it := range items {
		p, err := amdp.DecodePacket(it.Packet, amdp.DefaultLimits())
		if err != nil {
			return fail(err)
		}
		b.Packets = append(b.Packets, p)
	}
	if err := amdp.SealBatch(b, c.cfg.Signer); err != nil {
		return fail(err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.SendTimeout)
	defer cancel()
	if c.cfg.Anchors != nil {
		if err := c.cfg.Anchors.OpenBatch(sctx, router.OpenRecord(b)); err != nil {
			return fail(err)
		}
	}
	rb, err := c.cfg.Sender.Send(sctx, b.Header.ToRelay, b)
	if err != nil {
		return fail(err)
	}
	if c.cfg.Record != nil {
		if err := c.cfg.Record(ctx, b, rb); err != nil {
			c.log.Warn("resend receipts not recorded", "batch_seq", b.Header.BatchSeq, "err", err)
		}
	}
	var delivered, refused []*Item
	reason := ""
	for i, r := range rb.Receipts {
		if r.Status == amdp.StatusDelivered {
			delivered = append(delivered, items[i])
		} else {
			if err := items[i].refusedBy(r); err != nil {
				return fail(err)
			}
			refused = append(refused, items[i])
			reason = "refused by the destination: " + r.Reason
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.Resent(delivered, refused, nil, reason, time.Now())
}

// pollResolutions carries out the decisions people recorded on chain for
// packets this compensator holds in MANUAL.
func (c *Compensator) pollResolutions(ctx context.Context) {
	if c.cfg.Gov == nil {
		return
	}
	c.mu.Lock()
	waiting := 0
	for _, it := range c.m.Items() {
		if it.State == govchain.PacketState_PACKET_MANUAL {
			waiting++
		}
	}
	c.mu.Unlock()
	if waiting == 0 {
		return
	}
	exs, err := c.cfg.Gov.Exceptions(ctx, govchain.PacketState_PACKET_RESOLVED)
	if err != nil {
		c.log.Debug("read resolutions", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ex := range exs {
		var id [32]byte
		copy(id[:], ex.PacketId)
		if acts := c.m.Resolved(id, ex.Resolution); len(acts) > 0 {
			c.log.Info("carrying out a resolution", "pipe", ex.Pipe, "seq", ex.Seq, "action", ex.Resolution)
			c.queue = append(c.queue, acts)
		}
	}
}
