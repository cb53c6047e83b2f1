package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// Sender hands a sealed batch to the destination relay and returns its
// signed receipts once the peer has delivered the packets; mesh.Endpoint
// satisfies it. An error means the batch may or may not have arrived: the
// shard sends it again, and the destination's idempotent delivery makes
// that safe.
type Sender interface {
	Send(ctx context.Context, to string, b *amdp.Batch) (*amdp.ReceiptBatch, error)
}

// ReceiptSink records the receipts of a batch on the source side before the
// shard commits its offsets. An error stops the shard (nothing committed).
type ReceiptSink interface {
	Receipts(ctx context.Context, b *amdp.Batch, rb *amdp.ReceiptBatch) error
}

// Anchorer records batches' open anchors on the governance chain.
// QueueOpens queues one cycle's anchors in the order given (batch order)
// and returns without waiting for them; wait, called once, reports when
// all are committed (an anchor that already exists counts as committed)
// or that one failed. The shard queues from its loop, one cycle after the
// other, so its anchors reach the chain in batch order: a pipe's later
// range ahead of its earlier one is refused as a gap.
type Anchorer interface {
	QueueOpens(ctx context.Context, opens []*govchain.BatchOpen) (wait func(context.Context) error, err error)
}

// Rejection is an authentic packet refused at stage 1: its signature
// verified against its pipe's source key, and its pipe does not take it
// now (suspended, not authorized, payload over the pipe's limit). Forged,
// misrouted, malformed and out-of-sequence packets are never Rejections:
// they are dropped and reported as offences.
type Rejection struct {
	Packet *amdp.Packet
	Err    error
}

// Compensator takes over what the shard cannot finish. Both calls happen
// before the shard commits the records' offsets and must be durable when
// they return nil; an error stops the shard.
type Compensator interface {
	// Rejected takes the authentic packets refused at stage 1 in one
	// cycle (see Rejection).
	Rejected(ctx context.Context, rs []Rejection) error
	// Undeliverable takes a batch whose send budget is spent.
	Undeliverable(ctx context.Context, b *amdp.Batch, cause error) error
}

// Config configures a Shard.
type Config struct {
	RelayID  string        // this relay, the pipes' source relay
	Signer   crypto.Signer // the relay's batch-signing key (its registered account)
	Registry Registry
	Sender   Sender
	Receipts ReceiptSink // optional
	Anchors  Anchorer    // optional: without it nothing is anchored and strict pipes wait forever
	Comp     Compensator // optional: without it rejections are only counted and sends retry forever

	Brokers []string
	Topic   string // default "ccgp.events"
	Group   string // default "ccgp-router-<RelayID>"

	MaxBatchPackets int           // default 512
	MaxBatchBytes   int           // default 4 MiB
	MaxPoll         int           // records per cycle, default 4096
	Linger          time.Duration // wait for more records after the first, default 5ms
	// Pipeline is how many cycles may be sending at once (default 16; 1
	// runs them one after the other).
	Pipeline     int
	SendTimeout  time.Duration // one send attempt, default 30s; then it is retried
	DrainTimeout time.Duration // finishing the cycle in progress on stop, default 10s
	// SendBudget bounds how long one batch is retried before it goes to
	// the compensator (when there is one). Default 30s.
	SendBudget time.Duration
	Limits     amdp.Limits

	// OnReject, if set, is told of every rejected packet (p is nil for
	// malformed bytes). It must not block.
	OnReject func(p *amdp.Packet, err error)
	// Offences, if set, takes a record of every packet dropped at stage 1
	// (forged, misrouted, malformed, out of sequence), attributed to the
	// org and relay it claims to come from. It must not block.
	Offences offence.Reporter

	Logger    *slog.Logger
	Metrics   prometheus.Registerer // optional
	KafkaOpts []kgo.Opt             // extra client options (e.g. SessionTimeout in tests)
}

// Shard is one member of a relay's router consumer group.
type Shard struct {
	cfg Config
	cl  *kgo.Client
	log *slog.Logger
	chk *checker
	m   *metrics

	resetSeq atomic.Bool // set by rebalance callbacks; the loop resets the checker
	// rebalanceWaiting is set when the group wants to rebalance and waits
	// for this shard (BlockRebalanceOnPoll); the loop then drains its
	// pipeline and lets it through.
	rebalanceWaiting atomic.Bool
	batchSeq         atomic.Uint64

	routed, batches, rejected atomic.Uint64
	logLimit                  *logLimiter

	limMu    sync.Mutex // guards limiters
	limiters map[string]*rate.Limiter
}

// Stats are a shard's counters.
type Stats struct {
	Routed   uint64 // packets acknowledged by their destination relays
	Batches  uint64
	Rejected uint64
}

// NewShard validates cfg and joins the consumer group (lazily, on Run).
func NewShard(cfg Config) (*Shard, error) {
	switch {
	case cfg.RelayID == "":
		return nil, errors.New("router: RelayID is required")
	case cfg.Signer == nil:
		return nil, errors.New("router: Signer is required")
	case cfg.Registry == nil || cfg.Sender == nil:
		return nil, errors.New("router: Registry and Sender are required")
	case len(cfg.Brokers) == 0:
		return nil, errors.New("router: at least one Kafka broker is required")
	}
	if cfg.Topic == "" {
		cfg.Topic = "ccgp.events"
	}
	if cfg.Group == "" {
		cfg.Group = "ccgp-router-" + cfg.RelayID
	}
	if cfg.MaxBatchPackets <= 0 {
		cfg.MaxBatchPackets = 512
	}
	if l := cfg.Limits.MaxPacketsPerBatch; l > 0 && cfg.MaxBatchPackets > l {
		cfg.MaxBatchPackets = l
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 4 << 20
	}
	if cfg.MaxPoll <= 0 {
		cfg.MaxPoll = 4096
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Millisecond
	}
	if cfg.Pipeline <= 0 {
		cfg.Pipeline = 16
	}
	if cfg.SendBudget <= 0 {
		cfg.SendBudget = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Shard{cfg: cfg, log: cfg.Logger.With("relay", cfg.RelayID), chk: newChecker(cfg.RelayID, cfg.Registry, cfg.Limits.WithDefaults().MaxPayload), logLimit: newLogLimiter(20)}
	s.batchSeq.Store(uint64(time.Now().UnixNano())) // unique across restarts
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s.m = m
	onMove := func(context.Context, *kgo.Client, map[string][]int32) { s.resetSeq.Store(true) }
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(onMove),
		kgo.OnPartitionsRevoked(onMove),
		kgo.OnPartitionsLost(onMove),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { s.rebalanceWaiting.Store(true) }),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
	}, cfg.KafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("router: kafka client: %w", err)
	}
	s.cl = cl
	return s, nil
}

// Stats returns the shard's counters.
func (s *Shard) Stats() Stats {
	return Stats{Routed: s.routed.Load(), Batches: s.batches.Load(), Rejected: s.rejected.Load()}
}

// Run consumes, routes and commits until ctx ends, then leaves the group
// (so the others take its partitions at once) and returns nil.
//
// Cycles are pipelined: a cycle's checks (decode, resolve, signatures,
// sequences, batching) run in this loop, in poll order, and its sends run
// in the background while the next cycles are polled and checked, up to
// Pipeline cycles at once. Offsets are committed strictly in cycle order,
// each cycle's once all its batches are acknowledged: a later cycle that
// finishes first waits for the earlier ones, so a crash leaves no
// acknowledged gap behind an unacknowledged record (the next owner sends
// the unacknowledged ones again). Without pipelining every packet waits
// for the batches of the cycle before it, one destination block and one
// governance block.
//
// Rebalances wait for the pipeline to empty (BlockRebalanceOnPoll): the
// loop lets one through whenever nothing is in flight, and when the group
// signals that a rebalance is waiting (OnPartitionsCallbackBlocked) it
// stops polling, drains the pipeline and lets it through.
//
// The cycles in flight when ctx ends are finished first, for up to
// DrainTimeout, so a shard that leaves gracefully hands over no half-sent
// batches; records whose batches were not acknowledged are not committed,
// and the next owner of their partitions sends them again.
func (s *Shard) Run(ctx context.Context) error {
	defer func() {
		// With BlockRebalanceOnPoll, leaving the group waits for the poll
		// in progress to be released: release it, then leave.
		s.cl.AllowRebalance()
		s.cl.Close()
	}()
	// work outlives ctx by at most DrainTimeout.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	p := &pipeline{s: s, work: work}
	defer p.abandon() // after cancelWork: the sends left end at once
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(s.cfg.DrainTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()
	for {
		// Commit what has finished, in order; wait for the oldest cycle
		// when the pipeline is full or a rebalance is waiting.
		for len(p.queue) > 0 {
			wait := len(p.queue) >= s.cfg.Pipeline || s.rebalanceWaiting.Load()
			done, err := p.settle(wait)
			if err != nil {
				return s.stopped(work, err)
			}
			if !done {
				break
			}
		}
		if len(p.queue) == 0 {
			s.rebalanceWaiting.Store(false)
			s.cl.AllowRebalance()
		}
		if ctx.Err() != nil {
			return s.stopped(work, p.drain())
		}
		pctx, cancelPoll := p.pollContext(ctx)
		recs, err := s.poll(pctx)
		cancelPoll()
		if ctx.Err() != nil {
			return s.stopped(work, p.drain())
		}
		if err != nil {
			return err // the cycles in flight are abandoned, uncommitted
		}
		if len(recs) == 0 {
			continue
		}
		ready, err := s.prepare(work, recs)
		if err != nil {
			return s.stopped(work, err)
		}
		anchors, err := s.queueAnchors(work, ready)
		if err != nil {
			return s.stopped(work, err)
		}
		p.start(recs, ready, anchors)
	}
}

// stopped maps an error that only says the work context ended (the drain
// timed out) to a clean stop.
func (s *Shard) stopped(work context.Context, err error) error {
	if err != nil && work.Err() != nil {
		s.log.Warn("router stopped with cycles unfinished; their records are sent again by the next owner", "err", err)
		return nil
	}
	return err
}

// pipeline is the queue of cycles in flight, oldest first; only Run's
// goroutine touches it.
type pipeline struct {
	s     *Shard
	work  context.Context
	queue []*flight
}

// flight is one cycle whose batches are being sent.
type flight struct {
	recs []*kgo.Record
	done chan struct{} // closed when every batch is acknowledged or failed
	err  error         // set before done closes
}

func (p *pipeline) start(recs []*kgo.Record, ready []*pending, anchors *anchoring) {
	f := &flight{recs: recs, done: make(chan struct{})}
	p.queue = append(p.queue, f)
	p.s.m.inflight.Inc()
	go func() {
		defer close(f.done)
		f.err = p.s.sendAll(p.work, ready, anchors)
	}()
}

// settle commits the oldest cycle if it has finished (waiting for it when
// wait is set) and reports whether it did. A failed cycle stops the shard
// with nothing of it, or after it, committed.
func (p *pipeline) settle(wait bool) (bool, error) {
	f := p.queue[0]
	if wait {
		<-f.done
	} else {
		select {
		case <-f.done:
		default:
			return false, nil
		}
	}
	p.queue = p.queue[1:]
	p.s.m.inflight.Dec()
	if f.err != nil {
		return false, f.err
	}
	if err := p.s.cl.CommitRecords(p.work, f.recs...); err != nil && p.work.Err() == nil {
		// A failed commit only means these records may be sent again.
		p.s.log.Warn("offset commit failed; records will be re-sent after a rebalance", "err", err)
	}
	return true, nil
}

// drain finishes and commits every cycle in flight, in order, stopping at
// the first that failed.
func (p *pipeline) drain() error {
	for len(p.queue) > 0 {
		if _, err := p.settle(true); err != nil {
			return err
		}
	}
	return nil
}

// abandon waits for the sends still running after a failed cycle (the
// work context is cancelled by then, so they end quickly); their records
// stay uncommitted.
func (p *pipeline) abandon() {
	for _, f := range p.queue {
		<-f.done
		p.s.m.inflight.Dec()
	}
	p.queue = nil
}

// pollContext is ctx, ended early when the oldest cycle in flight
// finishes: a poll must not hold up its commit (nor the rebalance that
// waits for an empty pipeline) while no records arrive.
func (p *pipeline) pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if len(p.queue) == 0 {
		return ctx, func() {}
	}
	pctx, cancel := context.WithCancel(ctx)
	head := p.queue[0].done
	go func() {
		select {
		case <-head:
		case <-pctx.Done():
		}
		cancel()
	}()
	return pctx, cancel
}

// poll takes up to MaxPoll records, lingering briefly after the first ones
// so that batches fill at moderate rates.
func (s *Shard) poll(ctx context.Context) ([]*kgo.Record, error) {
	fs := s.cl.PollRecords(ctx, s.cfg.MaxPoll)
	if err := fetchErr(fs); err != nil {
		return nil, err
	}
	fs.EachError(func(topic string, part int32, err error) {
		if ctx.Err() == nil {
			s.log.Debug("fetch error (retried)", "topic", topic, "partition", part, "err", err)
		}
	})
	recs := fs.Records()
	if len(recs) == 0 || len(recs) >= s.cfg.MaxPoll {
		return recs, nil
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Linger)
	defer cancel()
	for len(recs) < s.cfg.MaxPoll && lctx.Err() == nil {
		more := s.cl.PollRecords(lctx, s.cfg.MaxPoll-len(recs))
		if err := fetchErr(more); err != nil {
			return nil, err
		}
		recs = append(recs, more.Records()...)
	}
	return recs, nil
}

// fetchErr reports a closed client; other fetch errors are retried by the
// client itself and only logged by the caller.
func fetchErr(fs kgo.Fetches) error {
	if fs.IsClientClosed() {
		return errors.New("router: kafka client closed")
	}
	return nil
}

// prepare checks one poll's records and batches the accepted ones
// (DESIGN §5a):
//
//  1. decode; undecodable bytes are dropped (malformed);
//  2. resolve the pipe and check the packet is authentic short of its
//     signature: known pipe, starting at this relay, credential naming its
//     source key (check.Authentic); then every signature, in batches
//     (check.Signatures). A failure names no verified request: dropped;
//  3. sequence: a replay or a gap is dropped too;
//  4. admit: an authentic packet its pipe does not take now (suspended,
//     over the pipe's payload limit) is a real request refused by
//     governance: it goes to the compensator, before the cycle's offsets
//     can be committed, and its sequence counts as used;
//  5. the rest are batched.
//
// A dropped packet is counted by reason, reported as an offence against
// the org and relay it claims to come from, logged at a bounded rate, and
// never compensated or anchored.
func (s *Shard) prepare(ctx context.Context, recs []*kgo.Record) ([]*pending, error) {
	if s.resetSeq.Swap(false) {
		s.chk.reset()
	}
	cands := make([]check.Item, len(recs))
	for i, r := range recs {
		p, err := amdp.DecodePacket(r.Value, s.cfg.Limits)
		if err != nil {
			cands[i].Err = &RejectError{Pipe: string(r.Key), Reason: ErrMalformed, Detail: err.Error()}
			continue
		}
		pipe, err := s.chk.resolve(p)
		cands[i] = check.Item{Packet: p, Pipe: pipe, Err: err}
	}
	check.Signatures(cands, nil)

	b := newBatcher(s.cfg.MaxBatchPackets, s.cfg.MaxBatchBytes)
	var ready []*pending
	var rejections []Rejection
	for i := range cands {
		c := &cands[i]
		if c.Err != nil {
			if c.Packet != nil {
				c.Err = reject(c.Packet, c.Err)
			}
			s.drop(c.Packet, c.Pipe, recs[i].Value, c.Err)
			continue
		}
		if err := s.chk.sequence(c.Packet); err != nil {
			s.drop(c.Packet, c.Pipe, recs[i].Value, err)
			continue
		}
		if err := s.chk.admit(c.Packet, c.Pipe); err != nil {
			s.reject(c.Packet, err)
			rejections = append(rejections, Rejection{Packet: c.Packet, Err: err})
			continue
		}
		if full := b.add(c.Pipe.Destination.RelayId, c.Packet, len(recs[i].Value)); full != nil {
			ready = append(ready, full)
		}
	}
	ready = append(ready, b.drain()...)
	if len(rejections) > 0 && s.cfg.Comp != nil {
		if err := s.cfg.Comp.Rejected(ctx, rejections); err != nil {
			return nil, fmt.Errorf("router: hand rejections to the compensator: %w", err)
		}
	}
	// Sequences, seals and open anchors in cycle order, before the sends
	// race: a pipe split over two batches, or over two cycles in flight,
	// then anchors its ranges in order (the chain refuses a range that
	// leaves a gap).
	for _, pb := range ready {
		pb.seq = s.batchSeq.Add(1)
		if err := s.seal(pb); err != nil {
			return nil, err
		}
	}
	return ready, nil
}

// drop counts a packet that failed stage 1 without naming a verified
// request and reports it as an offence (p is nil for undecodable bytes).
func (s *Shard) drop(p *amdp.Packet, pipe *govchain.Pipe, raw []byte, err error) {
	s.reject(p, err)
	if s.cfg.Offences != nil {
		r := offence.ForPacket(offence.StageRouter, Reason(err), p, pipe, raw, err.Error())
		r.Reporter, r.TimeUnixMs = s.cfg.RelayID, time.Now().UnixMilli()
		s.cfg.Offences.Report(r)
	}
}

// seal sorts a batch's packets by (pipe, sequence), so that each pipe's
// packets form one contiguous range (the anchor names ranges, not
// packets), and signs it.
func (s *Shard) seal(pb *pending) error {
	sort.SliceStable(pb.packets, func(i, j int) bool {
		a, b := pb.packets[i], pb.packets[j]
		return a.PipeId < b.PipeId || (a.PipeId == b.PipeId && a.Sequence < b.Sequence)
	})
	pb.batch = &amdp.Batch{
		Header: &amdp.BatchHeader{FromRelay: s.cfg.RelayID, ToRelay: pb.to, BatchSeq: pb.seq,
			CreatedUnixMs: uint64(time.Now().UnixMilli())},
		Packets: pb.packets,
	}
	if err := amdp.SealBatch(pb.batch, s.cfg.Signer); err != nil {
		return fmt.Errorf("router: seal batch: %w", err)
	}
	return nil
}

// anchoring is one cycle's open anchors on their way to the chain.
type anchoring struct {
	done chan struct{} // closed when err is set
	err  error
}

// queueAnchors queues the open anchors of a cycle's batches (from the
// loop, so in batch order) and waits for them in the background,
// queueing them again while they fail.
func (s *Shard) queueAnchors(ctx context.Context, ready []*pending) (*anchoring, error) {
	a := &anchoring{done: make(chan struct{})}
	if s.cfg.Anchors == nil || len(ready) == 0 {
		close(a.done)
		return a, nil
	}
	opens := make([]*govchain.BatchOpen, len(ready))
	for i, pb := range ready {
		opens[i] = OpenRecord(pb.batch)
	}
	wait, err := s.cfg.Anchors.QueueOpens(ctx, opens)
	if err != nil {
		return nil, fmt.Errorf("router: queue open anchors: %w", err)
	}
	go func() {
		defer close(a.done)
		retry := backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
		for attempt := 1; ; attempt++ {
			err := wait(ctx)
			if err == nil || ctx.Err() != nil {
				a.err = err
				return
			}
			if attempt == 1 || attempt%20 == 0 {
				s.log.Warn("batch anchors not committed; retrying", "batches", len(opens), "first_batch_seq", opens[0].BatchSeq, "attempt", attempt, "err", err)
			}
			if err := backoff.Wait(ctx, retry.Delay(attempt)); err != nil {
				a.err = err
				return
			}
			// Anchors already committed count as committed again.
			if wait, err = s.cfg.Anchors.QueueOpens(ctx, opens); err != nil {
				a.err = err
				return
			}
		}
	}()
	return a, nil
}

// wait returns once the cycle's anchors are committed, or ctx ends.
func (a *anchoring) wait(ctx context.Context) error {
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Shard) reject(p *amdp.Packet, err error) {
	s.rejected.Add(1)
	reason := Reason(err)
	s.m.rejected.WithLabelValues(reason).Inc()
	if s.logLimit.allow(reason) {
		s.log.Warn("packet rejected", "reason", reason, "err", err)
	}
	if s.cfg.OnReject != nil {
		s.cfg.OnReject(p, err)
	}
}

// sendAll sends the sealed batches concurrently, each until its peer
// acknowledges or ctx ends, and records their receipts; it returns once
// the cycle's open anchors are committed too (the offsets wait for both).
func (s *Shard) sendAll(ctx context.Context, ready []*pending, anchors *anchoring) error {
	errs := make([]error, len(ready)+1)
	var wg sync.WaitGroup
	for i, pb := range ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.send(ctx, pb.batch, anchors)
		}()
	}
	wg.Wait()
	errs[len(ready)] = anchors.wait(ctx)
	return errors.Join(errs...)
}

func (s *Shard) send(ctx context.Context, b *amdp.Batch, anchors *anchoring) error {
	if err := s.shape(ctx, b); err != nil {
		return err
	}
	// Strict pipes: the anchor is committed before the batch leaves.
	// Optimistic: it is on its way while the batch is delivered.
	if s.strict(b) {
		if err := anchors.wait(ctx); err != nil {
			return err
		}
	}
	return s.deliver(ctx, b)
}

// shape holds a batch until each of its pipes is within the rate the pipe
// records on the governance chain (Limits.RatePerSec). A pipe over its
// rate is slowed, not refused: nothing an app sent is lost to shaping,
// and the backpressure reaches Kafka.
func (s *Shard) shape(ctx context.Context, b *amdp.Batch) error {
	counts := map[string]int{}
	for _, p := range b.Packets {
		counts[p.PipeId]++
	}
	for id, n := range counts {
		pipe, ok := s.cfg.Registry.Pipe(id)
		if !ok || pipe.GetLimits().GetRatePerSec() == 0 {
			continue
		}
		lim := s.limiter(id, int(pipe.Limits.RatePerSec))
		for n > 0 {
			k := min(n, lim.Burst())
			if err := lim.WaitN(ctx, k); err != nil {
				return err
			}
			n -= k
		}
	}
	return nil
}

func (s *Shard) limiter(pipe string, perSec int) *rate.Limiter {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	if s.limiters == nil {
		s.limiters = map[string]*rate.Limiter{}
	}
	l, ok := s.limiters[pipe]
	if !ok || l.Burst() != perSec {
		// A second's worth of burst; the rate follows governance changes.
		l = rate.NewLimiter(rate.Limit(perSec), perSec)
		s.limiters[pipe] = l
	}
	return l
}

// strict reports whether b carries packets of a strict pipe.
func (s *Shard) strict(b *amdp.Batch) bool {
	for _, p := range b.Packets {
		if pipe, ok := s.cfg.Registry.Pipe(p.PipeId); ok && pipe.Mode == govchain.ConsistencyMode_MODE_STRICT {
			return true
		}
	}
	return false
}

// OpenRecord is the open-batch anchor of a sealed batch whose packets are
// sorted by (pipe, sequence).
func OpenRecord(b *amdp.Batch) *govchain.BatchOpen {
	o := &govchain.BatchOpen{FromRelay: b.Header.FromRelay, ToRelay: b.Header.ToRelay, BatchSeq: b.Header.BatchSeq,
		MerkleRoot: b.Header.MerkleRoot, Count: b.Header.PacketCount}
	var cur *govchain.PipeRange
	for i, p := range b.Packets {
		if cur != nil && cur.Pipe == p.PipeId && cur.Last+1 == p.Sequence {
			cur.Last = p.Sequence
			continue
		}
		cur = &govchain.PipeRange{Pipe: p.PipeId, First: p.Sequence, Last: p.Sequence, Offset: uint32(i)}
		o.Ranges = append(o.Ranges, cur)
	}
	return o
}

// deliver sends b until its peer acknowledges, ctx ends, or (with a
// compensator) the send budget is spent and the batch is handed over.
func (s *Shard) deliver(ctx context.Context, b *amdp.Batch) error {
	to := b.Header.ToRelay
	budget := time.Now().Add(s.cfg.SendBudget)
	// A peer that is down slows this shard instead of growing a queue.
	retry := backoff.Policy{Min: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: true}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, min(s.cfg.SendTimeout, time.Until(budget)+time.Millisecond))
		rb, err := s.cfg.Sender.Send(actx, to, b)
		cancel()
		if err == nil {
			s.m.sendSeconds.Observe(time.Since(start).Seconds())
			if s.cfg.Receipts != nil {
				if err := s.cfg.Receipts.Receipts(ctx, b, rb); err != nil {
					return fmt.Errorf("router: record receipts: %w", err)
				}
			}
			s.routed.Add(uint64(len(b.Packets)))
			s.batches.Add(1)
			s.m.batches.Inc()
			s.m.routed.Add(float64(len(b.Packets)))
			s.m.batchSize.Observe(float64(len(b.Packets)))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.m.sendErrors.Inc()
		if s.cfg.Comp != nil && time.Now().After(budget) {
			s.log.Warn("send budget spent; batch handed to the compensator", "to", to, "packets", len(b.Packets), "attempts", attempt, "err", err)
			if err := s.cfg.Comp.Undeliverable(ctx, b, err); err != nil {
				return fmt.Errorf("router: hand batch to the compensator: %w", err)
			}
			return nil
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Warn("batch not acknowledged; retrying", "to", to, "packets", len(b.Packets), "attempt", attempt, "err", err)
		}
		if err := backoff.Wait(ctx, retry.Delay(attempt)); err != nil {
			return err
		}
	}
}

// logLimiter lets through at most n lines per reason per second, so a flood
// of bad packets cannot flood the log; each rejection is still counted.
type logLimiter struct {
	mu     sync.Mutex // guards the following
	n      int
	window time.Time
	counts map[string]int
}

func newLogLimiter(n int) *logLimiter { return &logLimiter{n: n, counts: map[string]int{}} }

func (l *logLimiter) allow(reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.window) > time.Second {
		l.window, l.counts = now, map[string]int{}
	}
	l.counts[reason]++
	return l.counts[reason] <= l.n
}
