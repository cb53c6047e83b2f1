package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// SinkConfig configures a Sink.
type SinkConfig struct {
	Brokers  []string    // Kafka seed brokers
	Conn     driver.Conn // ClickHouse (Connect); the caller closes it
	Database string      // default "ccgp"
	Group    string      // the sink's own consumer group; default "ccgp-analytics"
	Pipes    PipeLookup  // the governance chain (*govchain.Client)

	// MaxRows flushes when this many rows are buffered (default 50 000;
	// at most 100 000). It also bounds memory: the sink polls no more
	// while a full buffer waits for ClickHouse.
	MaxRows int
	// Interval flushes what arrived within it (default 1 s).
	Interval time.Duration
	// Retry is the wait between insert attempts while ClickHouse fails
	// (default 100 ms doubling to 10 s, jittered).
	Retry backoff.Policy
	// ReportEvery is how often the lag is measured and a progress line
	// logged (default 10 s).
	ReportEvery time.Duration
	// ShutdownTimeout bounds the last flush and commit after ctx ends
	// (default 10 s).
	ShutdownTimeout time.Duration
	Log             *slog.Logger
	// KafkaOpts are added to the consumer's options (TLS, SASL).
	KafkaOpts []kgo.Opt
}

func (c SinkConfig) withDefaults() (SinkConfig, error) {
	if len(c.Brokers) == 0 {
		return c, errors.New("analytics: sink: no Kafka brokers")
	}
	if c.Conn == nil || c.Pipes == nil {
		return c, errors.New("analytics: sink: a ClickHouse connection and a pipe lookup are required")
	}
	if c.Database == "" {
		c.Database = "ccgp"
	}
	if !identifier.MatchString(c.Database) {
		return c, fmt.Errorf("%w: %q (letters, digits and _ only)", ErrBadDatabase, c.Database)
	}
	if c.Group == "" {
		c.Group = "ccgp-analytics"
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 50_000
	}
	c.MaxRows = min(c.MaxRows, 100_000)
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Retry.Max == 0 {
		c.Retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: true}
	}
	if c.ReportEvery <= 0 {
		c.ReportEvery = 10 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// SinkStats is what the sink has done since it started.
type SinkStats struct {
	Records   uint64 // records consumed
	Skipped   uint64 // undecodable records, counted and skipped
	Packets   uint64 // rows acknowledged by ClickHouse, per table
	Receipts  uint64
	Batches   uint64
	Offenders uint64
	Flushes   uint64 // flushes acknowledged and committed
	Failures  uint64 // insert attempts that failed (ClickHouse down or refusing)
	Buffered  int    // rows waiting for the next flush
	Down      bool   // the latest insert attempt failed
	LastError string // its error
	// Lag is how many records of the sink's topics its group has not
	// committed (not yet acknowledged by ClickHouse), measured at LagAt;
	// -1 before the first measurement.
	Lag   int64
	LagAt time.Time
}

// Sink copies the ledger's Kafka topics into ClickHouse: packets from
// every relay's events topic, receipts and their batches from
// ccgp.receipts, offence records from ccgp.offenders.
//
// It is only a consumer, in its own group, so it never slows the relays.
// Rows are inserted in batches (MaxRows, or what arrived within Interval)
// and the offsets committed only after ClickHouse acknowledged every row
// of the batch: a crash between the two redelivers the batch, and the
// tables, ReplacingMergeTrees keyed by each record's natural key with a
// version taken from the record, make the second copy an identical row
// that FINAL reads once.
type Sink struct {
	cfg SinkConfig
	dec *decoder

	mu    sync.Mutex // guards stats
	stats SinkStats

	badLogged time.Time // the last undecodable record logged (Run's goroutine only)

	// hook, for tests, is called at "insert" (before the batch is sent)
	// and "commit" (after every table acknowledged, before the commit);
	// an error stops Run there as a crash would, without committing.
	hook func(stage string) error
}

// NewSink validates cfg.
func NewSink(cfg SinkConfig) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: cfg, dec: newDecoder(cfg.Pipes), stats: SinkStats{Lag: -1}}, nil
}

// Stats returns a snapshot of the sink's counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Sink) update(f func(*SinkStats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// Run migrates the database (refusing, with ErrSchemaNewer, a schema newer
// than this binary), joins the group and copies records until ctx ends.
// Then it flushes what is buffered if ClickHouse answers within
// ShutdownTimeout, commits, leaves the group and returns nil. While
// ClickHouse fails it retries the same batch with backoff and polls no
// more, so memory stays bounded and the lag grows (Stats, and the log).
func (s *Sink) Run(ctx context.Context) error {
	if _, err := Migrate(ctx, s.cfg.Conn, s.cfg.Database); err != nil {
		return err
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(eventsPattern, `^`+regexp.QuoteMeta(ReceiptsTopic)+`$`, `^`+regexp.QuoteMeta(offence.Topic)+`$`),
		kgo.DisableAutoCommit(),
		// A new group starts at the beginning: the ledger wants all of it.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// New relays' topics are found at a metadata refresh.
		kgo.MetadataMaxAge(10 * time.Second),
	}, s.cfg.KafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("analytics: sink: kafka client: %w", err)
	}
	// Close leaves the group; with auto-commit off it commits nothing, so
	// a Run that stops on an error (or a test's crash) commits nothing
	// beyond the last acknowledged flush.
	defer cl.Close()

	rctx, stopReport := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.report(rctx, cl) }()
	defer func() { stopReport(); wg.Wait() }()

	b := &rows{last: map[topicPartition]*kgo.Record{}}
	for {
		if ctx.Err() != nil {
			return s.shutdown(cl, b)
		}
		if err := s.poll(ctx, cl, b); err != nil {
			if ctx.Err() != nil {
				return s.shutdown(cl, b)
			}
			return err
		}
		if b.records == 0 || (b.len() < s.cfg.MaxRows && time.Since(b.started) < s.cfg.Interval) {
			continue
		}
		if err := s.flush(ctx, cl, b, true); err != nil {
			if ctx.Err() != nil {
				return s.shutdown(cl, b)
			}
			return err
		}
	}
}

// poll takes what has arrived, waiting at most until the buffered batch
// is due, and turns it into rows.
func (s *Sink) poll(ctx context.Context, cl *kgo.Client, b *rows) error {
	wait := s.cfg.Interval
	if b.records > 0 {
		wait = s.cfg.Interval - time.Since(b.started)
	}
	pctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
	defer cancel()
	fs := cl.PollRecords(pctx, s.cfg.MaxRows-b.len())
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue
		}
		if errors.Is(fe.Err, kgo.ErrClientClosed) {
			return fe.Err
		}
		// Broker trouble: the client retries by itself; say so.
		s.cfg.Log.Warn("analytics sink: fetch", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
	}
	var n, bad uint64
	for it := fs.RecordIter(); !it.Done(); {
		r := it.Next()
		if b.records == 0 {
			b.started = time.Now()
		}
		if err := s.decode(ctx, b, r); err != nil {
			if !errors.Is(err, errBadRecord) {
				return err // ctx ended while governance did not answer
			}
			bad++
			if time.Since(s.badLogged) > 10*time.Second {
				s.badLogged = time.Now()
				s.cfg.Log.Warn("analytics sink: skipping undecodable record (logged at most every 10 s; Stats().Skipped counts them)", "err", err)
			}
		}
		b.last[topicPartition{r.Topic, r.Partition}] = r
		b.records++
		n++
	}
	if n > 0 {
		s.update(func(st *SinkStats) { st.Records += n; st.Skipped += bad; st.Buffered = b.len() })
	}
	return nil
}

// decode adds r's rows, asking governance again (with backoff) while it
// cannot answer: a row written without its pipe's endpoints would stay so.
func (s *Sink) decode(ctx context.Context, b *rows, r *kgo.Record) error {
	for n := 1; ; n++ {
		err := s.dec.add(ctx, b, r)
		if err == nil || errors.Is(err, errBadRecord) {
			return err
		}
		s.cfg.Log.Warn("analytics sink: governance lookup failed; retrying", "attempt", n, "err", err)
		if err := backoff.Wait(ctx, s.cfg.Retry.Delay(n)); err != nil {
			return err
		}
	}
}

// flush inserts b, one batch per table, retrying the whole of it until
// ClickHouse acknowledges every table (retry false: one attempt), then
// commits b's offsets and empties it. A retry after a partial success
// writes some rows twice, which the tables' keys absorb.
func (s *Sink) flush(ctx context.Context, cl *kgo.Client, b *rows, retry bool) error {
	if b.len() > 0 {
		for n := 1; ; n++ {
			if s.hook != nil {
				if err := s.hook("insert"); err != nil {
					return err
				}
			}
			err := s.insert(ctx, b)
			if err == nil {
				break
			}
			s.update(func(st *SinkStats) { st.Failures++; st.Down = true; st.LastError = err.Error() })
			if n == 1 || n%10 == 0 {
				s.cfg.Log.Warn("analytics sink: insert failed; retrying, not polling meanwhile", "attempt", n, "rows", b.len(), "err", err)
			}
			if !retry || ctx.Err() != nil {
				return err
			}
			if err := backoff.Wait(ctx, s.cfg.Retry.Delay(n)); err != nil {
				return err
			}
		}
	}
	if s.hook != nil {
		if err := s.hook("commit"); err != nil {
			return err
		}
	}
	last := make([]*kgo.Record, 0, len(b.last))
	for _, r := range b.last {
		last = append(last, r)
	}
	if err := cl.CommitRecords(ctx, last...); err != nil {
		// The rows are in ClickHouse; the offsets go with the next
		// commit, or are redelivered, which the keys absorb.
		s.cfg.Log.Warn("analytics sink: commit failed; the next flush commits past these records", "err", err)
	}
	s.update(func(st *SinkStats) {
		st.Packets += uint64(len(b.packets))
		st.Receipts += uint64(len(b.receipts))
		st.Batches += uint64(len(b.batches))
		st.Offenders += uint64(len(b.offenders))
		st.Flushes++
		st.Down, st.LastError, st.Buffered = false, "", 0
	})
	b.reset()
	return nil
}

// insert sends each non-empty table's rows as one batch.
func (s *Sink) insert(ctx context.Context, b *rows) error {
	q := "`" + s.cfg.Database + "`"
	send := func(stmt string, n int, row func(i int) []any) error {
		if n == 0 {
			return nil
		}
		bt, err := s.cfg.Conn.PrepareBatch(ctx, fmt.Sprintf(stmt, q))
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := bt.Append(row(i)...); err != nil {
				_ = bt.Abort()
				return err
			}
		}
		return bt.Send()
	}
	for _, t := range []struct {
		name, stmt string
		n          int
		row        func(int) []any
	}{
		{"packets", packetInsert, len(b.packets), func(i int) []any { return b.packets[i].values() }},
		{"receipts", receiptInsert, len(b.receipts), func(i int) []any { return b.receipts[i].values() }},
		{"batches", batchInsert, len(b.batches), func(i int) []any { return b.batches[i].values() }},
		{"offenders", offenderInsert, len(b.offenders), func(i int) []any { return b.offenders[i].values() }},
	} {
		if err := send(t.stmt, t.n, t.row); err != nil {
			return fmt.Errorf("analytics: sink: insert %d rows into %s: %w", t.n, t.name, err)
		}
	}
	return nil
}

// shutdown makes one bounded attempt to flush and commit what is
// buffered, after ctx ended, and leaves the group (the deferred Close).
func (s *Sink) shutdown(cl *kgo.Client, b *rows) error {
	if b.records == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.flush(ctx, cl, b, false); err != nil {
		s.cfg.Log.Warn("analytics sink: stopping with rows ClickHouse did not take; their records are redelivered at the next start", "rows", b.len(), "err", err)
	}
	return nil
}
