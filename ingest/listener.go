package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Listener follows one chain's final blocks and produces every
// cross-chain request in them to Kafka, checkpointing a height only once
// Kafka has acknowledged every record at or below it.
//
// Records are produced asynchronously across blocks: the client batches
// them (ProducerLinger) and a block counts as done when its last ack
// arrives. The checkpoint is saved at most every CheckpointEvery, with the
// highest height below which every block is done, so a crash re-produces
// at most the blocks after it; the router drops those duplicates by
// sequence.
type Listener struct {
	chain   subchain.Chain
	client  *kgo.Client
	cp      Checkpoint
	cfg     listenerCfg
	chainID []byte // header value, shared by every record

	running  atomic.Bool
	saved    atomic.Uint64
	acked    atomic.Uint64
	produced atomic.Uint64
	restarts atomic.Uint64
}

// ListenerStats is a listener's progress.
type ListenerStats struct {
	Height   uint64 // last checkpointed height
	Acked    uint64 // highest height with it and everything below acknowledged by Kafka
	Produced uint64 // records Kafka acknowledged, over every Run
	// Restarts counts the Runs that Serve started again after a produce
	// failure.
	Restarts uint64
}

// ListenerMetrics receives a listener's progress, e.g. to feed Prometheus.
// Its methods are called from Run's goroutine and must not block.
type ListenerMetrics interface {
	// BlockAcked is called for each block once Kafka acknowledged all
	// of its records (records may be 0), in height order.
	BlockAcked(height uint64, records int)
	// Checkpointed is called after each successful Save.
	Checkpointed(height uint64)
}

// ListenerOpt configures a Listener.
type ListenerOpt interface{ apply(*listenerCfg) }

type listenerOpt struct{ fn func(*listenerCfg) }

func (o listenerOpt) apply(c *listenerCfg) { o.fn(c) }

type listenerCfg struct {
	topic            string
	log              *slog.Logger
	checkpointEvery  time.Duration
	maxPendingBlocks int
	drainTimeout     time.Duration
	metrics          ListenerMetrics
	retryMin         time.Duration
	retryMax         time.Duration
}

// Topic sets the topic records go to, overriding DefaultTopic.
func Topic(topic string) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.topic = topic }}
}

// WithLogger sets the logger, overriding a discarding one.
func WithLogger(l *slog.Logger) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.log = l }}
}

// CheckpointEvery bounds how often the checkpoint is saved, overriding the
// default 100ms: each save is an fsync, and the interval is how much a
// crash may re-produce.
func CheckpointEvery(d time.Duration) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.checkpointEvery = d }}
}

// MaxPendingBlocks bounds the blocks produced but not yet all
// acknowledged, overriding the default 4096; at the bound the listener
// stops reading blocks until acks arrive. (The client's MaxBufferedRecords
// bounds the records.)
func MaxPendingBlocks(n int) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.maxPendingBlocks = n }}
}

// DrainTimeout bounds how long Run waits, once its ctx ended, for the acks
// of records already produced so that it can checkpoint them, overriding
// the default 5s. Records still unacknowledged then are cancelled.
func DrainTimeout(d time.Duration) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.drainTimeout = d }}
}

// RetryBackoff sets Serve's wait before running again after a produce
// failure, overriding 100ms doubling up to 10s: the first wait after a
// Run that made progress is min again.
func RetryBackoff(min, max time.Duration) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.retryMin, c.retryMax = min, max }}
}

// WithMetrics sets a receiver of progress events.
func WithMetrics(m ListenerMetrics) ListenerOpt {
	return listenerOpt{func(c *listenerCfg) { c.metrics = m }}
}

// NewListener returns a listener of chain that produces with client and
// checkpoints in cp. The client's producer settings matter: use
// NewKafkaClient.
func NewListener(chain subchain.Chain, client *kgo.Client, cp Checkpoint, opts ...ListenerOpt) (*Listener, error) {
	cfg := listenerCfg{
		topic:            DefaultTopic,
		log:              slog.New(slog.DiscardHandler),
		checkpointEvery:  100 * time.Millisecond,
		maxPendingBlocks: 4096,
		drainTimeout:     5 * time.Second,
		retryMin:         100 * time.Millisecond,
		retryMax:         10 * time.Second,
	}
	for _, o := range opts {
		o.apply(&cfg)
	}
	switch {
	case chain == nil:
		return nil, fmt.Errorf("%w: listener: nil chain", ErrConfig)
	case client == nil:
		return nil, fmt.Errorf("%w: listener: nil Kafka client", ErrConfig)
	case cp == nil:
		return nil, fmt.Errorf("%w: listener: nil checkpoint", ErrConfig)
	case cfg.topic == "":
		return nil, fmt.Errorf("%w: listener: empty topic", ErrConfig)
	case cfg.log == nil:
		return nil, fmt.Errorf("%w: listener: nil logger", ErrConfig)
	case cfg.checkpointEvery <= 0:
		return nil, fmt.Errorf("%w: listener: checkpoint interval %v", ErrConfig, cfg.checkpointEvery)
	case cfg.maxPendingBlocks <= 0:
		return nil, fmt.Errorf("%w: listener: max pending blocks %d", ErrConfig, cfg.maxPendingBlocks)
	case cfg.drainTimeout < 0:
		return nil, fmt.Errorf("%w: listener: drain timeout %v", ErrConfig, cfg.drainTimeout)
	case cfg.retryMin <= 0 || cfg.retryMax < cfg.retryMin:
		return nil, fmt.Errorf("%w: listener: retry backoff %v..%v", ErrConfig, cfg.retryMin, cfg.retryMax)
	}
	cfg.log = cfg.log.With("chain", chain.ID(), "topic", cfg.topic)
	return &Listener{chain: chain, client: client, cp: cp, cfg: cfg, chainID: []byte(chain.ID())}, nil
}

// Stats returns the listener's progress; safe to call at any time.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Height: l.saved.Load(), Acked: l.acked.Load(), Produced: l.produced.Load(), Restarts: l.restarts.Load()}
}

// Serve runs the listener until ctx ends, as Run does, but outlives
// Kafka's failures: after a Run ended by a produce failure (which
// checkpointed every block Kafka acknowledged before it) it logs, counts
// (Stats().Restarts), waits with backoff and runs again from that
// checkpoint. Nothing is lost: the failed block and those after it are
// produced again; a record Kafka took before the failure may be there
// twice, which the router drops by sequence (as after a crash). Serve
// returns nil once ctx ends, or the first error that is not a produce
// failure (checkpoint, chain stream).
func (l *Listener) Serve(ctx context.Context) error {
	retry := backoff.Policy{Min: l.cfg.retryMin, Max: l.cfg.retryMax}
	failures := 0
	for {
		before := l.acked.Load()
		err := l.Run(ctx)
		if err == nil || ctx.Err() != nil || !errors.Is(err, ErrProduce) {
			return err
		}
		if l.acked.Load() > before {
			failures = 0 // Kafka worked for a while: a new fault
		}
		failures++
		delay := retry.Delay(failures)
		l.restarts.Add(1)
		l.cfg.log.Warn("listener: Kafka failed a record; resuming from the checkpoint", "checkpoint", l.saved.Load(),
			"retry_in", delay, "err", err)
		if backoff.Wait(ctx, delay) != nil {
			return nil
		}
	}
}

// Run follows the chain from the checkpointed height + 1 until ctx ends,
// then waits up to DrainTimeout for the acks of what it produced,
// checkpoints them, and returns nil. It returns early with an error
// wrapping ErrProduce when Kafka fails a record (after checkpointing the
// blocks before it), ErrCheckpoint when the checkpoint cannot be loaded or
// saved, or ErrStreamEnded when the chain ends the stream. After an error
// the client may still hold records of this run: close it, or let a new
// Run start again from the checkpoint.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer l.running.Store(false)
	last, err := l.cp.Load()
	if err != nil {
		return fmt.Errorf("%w: load: %w", ErrCheckpoint, err)
	}
	l.saved.Store(last)
	l.acked.Store(last)
	sctx, stop := context.WithCancel(ctx)
	defer stop() // ends the chain's stream
	blocks, err := l.chain.Blocks(sctx, last+1)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStreamEnded, l.chain.ID(), err)
	}
	l.cfg.log.Info("listener start", "from", last+1)

	// Records are produced under their own context, so that those in
	// flight when ctx ends still get their acks (and a checkpoint) during
	// the drain; the drain clock cancels it DrainTimeout after ctx ended,
	// which fails whatever is left and unblocks a Produce waiting for
	// buffer space.
	pctx, cancelProduce := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProduce()
	stopClock := context.AfterFunc(ctx, func() {
		t := time.NewTimer(l.cfg.drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelProduce()
		case <-pctx.Done(): // Run returned
		}
	})
	defer stopClock()

	r := &run{l: l, pctx: pctx, acked: last, saved: last, lastSave: time.Now(), wake: make(chan struct{}, 1)}
	err = r.loop(ctx, blocks)
	l.cfg.log.Info("listener stop", "checkpoint", r.saved, "err", err)
	return err
}

// run is the state of one Run. Only Run's goroutine touches it, except
// the fields that the produce promises use: the blocks' counters, fail
// and wake.
type run struct {
	l        *Listener
	pctx     context.Context // records' context; ends DrainTimeout after Run's ctx
	pending  []*pendingBlock // produced, not yet all acknowledged; in height order
	acked    uint64
	saved    uint64
	lastSave time.Time

	wake chan struct{} // a block finished or a record failed

	errMu sync.Mutex // guards err
	err   error      // the first record that failed
}

// pendingBlock counts a produced block's outstanding acks.
type pendingBlock struct {
	r       *run
	height  uint64
	records int
	left    atomic.Int64
	failed  atomic.Bool
}

// promise is the kgo callback of every record of the block.
func (b *pendingBlock) promise(rec *kgo.Record, err error) {
	if err != nil {
		b.failed.Store(true)
		b.r.fail(fmt.Errorf("%w: height %d, partition %d: %w", ErrProduce, b.height, rec.Partition, err))
	} else {
		b.r.l.produced.Add(1)
	}
	if b.left.Add(-1) == 0 || err != nil {
		b.r.signal()
	}
}

func (r *run) signal() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

func (r *run) fail(err error) {
	r.errMu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.errMu.Unlock()
}

func (r *run) failure() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

func (r *run) loop(ctx context.Context, blocks <-chan subchain.Block) error {
	tick := time.NewTicker(r.l.cfg.checkpointEvery)
	defer tick.Stop()
	for {
		in := blocks
		if len(r.pending) >= r.l.cfg.maxPendingBlocks {
			in = nil // wait for acks
		}
		var err error
		select {
		case b, ok := <-in:
			if !ok {
				if ctx.Err() != nil {
					return r.drain()
				}
				err := fmt.Errorf("%w: %s", ErrStreamEnded, r.l.chain.ID())
				if cerr := r.l.chain.Err(); cerr != nil {
					err = fmt.Errorf("%w: %w", err, cerr)
				}
				return r.stop(err)
			}
			err = r.produce(b)
		case <-r.wake:
			err = r.advance()
		case <-tick.C:
			err = r.advance()
		case <-ctx.Done():
			return r.drain()
		}
		if err != nil {
			if ctx.Err() != nil && !errors.Is(err, ErrCheckpoint) {
				// Stopping anyway: a failed record is not checkpointed
				// and the next Run produces it again.
				return r.drain()
			}
			return r.stop(err)
		}
	}
}

// produce hands every request of b to the client, which batches them with
// other blocks' records; b is done when its last promise succeeds.
func (r *run) produce(b subchain.Block) error {
	l := r.l
	pb := &pendingBlock{r: r, height: b.Height, records: len(b.Events)}
	pb.left.Store(int64(len(b.Events)))
	r.pending = append(r.pending, pb)
	if len(b.Events) == 0 {
		return r.advance()
	}
	height := strconv.AppendUint(nil, b.Height, 10)
	for i, ev := range b.Events {
		val, err := amdp.EncodePacket(nil, ev.Packet)
		if err != nil {
			// Nothing after this record of the block is produced: it
			// must never count as done.
			pb.failed.Store(true)
			pb.left.Add(-int64(len(b.Events) - i))
			return fmt.Errorf("ingest: block %d tx %x: %w", b.Height, ev.TxHash, err)
		}
		l.client.Produce(r.pctx, &kgo.Record{
			Topic: l.cfg.topic,
			Key:   []byte(ev.Packet.GetPipeId()),
			Value: val,
			Headers: []kgo.RecordHeader{
				{Key: HeaderChain, Value: l.chainID},
				{Key: HeaderHeight, Value: height},
				{Key: HeaderTxHash, Value: ev.TxHash},
			},
		}, pb.promise)
	}
	return nil
}

// advance moves the acknowledged height over the done blocks and saves
// the checkpoint when it is due. It returns the first produce failure, if
// any.
func (r *run) advance() error {
	r.pop()
	if err := r.failure(); err != nil {
		return err
	}
	if r.acked > r.saved && time.Since(r.lastSave) >= r.l.cfg.checkpointEvery {
		return r.save()
	}
	return nil
}

// pop moves the acknowledged height over the done blocks at the front: a
// block after a failed or unfinished one waits, whatever its own acks.
func (r *run) pop() {
	l := r.l
	n := 0
	for _, b := range r.pending {
		if b.failed.Load() || b.left.Load() != 0 {
			break
		}
		r.acked = b.height
		if l.cfg.metrics != nil {
			l.cfg.metrics.BlockAcked(b.height, b.records)
		}
		n++
	}
	if n > 0 {
		clear(r.pending[:n])
		r.pending = r.pending[n:]
		l.acked.Store(r.acked)
	}
}

func (r *run) save() error {
	if r.acked <= r.saved {
		return nil
	}
	if err := r.l.cp.Save(r.acked); err != nil {
		return fmt.Errorf("%w: save %d: %w", ErrCheckpoint, r.acked, err)
	}
	r.saved, r.lastSave = r.acked, time.Now()
	r.l.saved.Store(r.saved)
	if m := r.l.cfg.metrics; m != nil {
		m.Checkpointed(r.saved)
	}
	return nil
}

// stop ends Run on err, checkpointing what Kafka acknowledged before it.
func (r *run) stop(err error) error {
	r.l.cfg.log.Error("listener failed", "acked", r.acked, "err", err)
	r.pop()
	if errors.Is(err, ErrCheckpoint) {
		return err // saving is what failed: do not try again
	}
	if serr := r.save(); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// drain ends Run after ctx ended: it waits for the acks of what was
// produced until the drain clock runs out (DrainTimeout after ctx ended),
// checkpoints the acknowledged blocks and returns nil unless saving fails.
func (r *run) drain() error {
	for !r.settled() {
		select {
		case <-r.wake:
		case <-r.pctx.Done():
			r.l.cfg.log.Warn("listener stop: acks still outstanding", "blocks", len(r.pending))
			r.pop()
			return r.save()
		}
	}
	r.pop()
	return r.save()
}

// settled reports whether every produced record has its outcome.
func (r *run) settled() bool {
	for _, b := range r.pending {
		if b.left.Load() != 0 {
			return false
		}
	}
	return true
}
