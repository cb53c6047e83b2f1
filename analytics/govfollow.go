package analytics

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	abci "github.com/cometbft/cometbft/abci/types"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"github.com/cometbft/cometbft/types"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// GovChain is what the governance follower reads of the chain.
// *govchain.Client satisfies it. Errors are taken as transient: the
// follower retries the same read with backoff, so a node that is down
// stalls it and never makes it skip a block.
type GovChain interface {
	ChainID() string
	// Height is the latest committed block.
	Height(ctx context.Context) (int64, error)
	// Blocks tells of new blocks until ctx ends or the node ends the
	// subscription (the channel closes); heights may be skipped.
	Blocks(ctx context.Context) (<-chan int64, error)
	// RPC serves /block and /block_results.
	RPC() rpcclient.Client
	// GetAt reads a record at a state height (0: the latest), proven;
	// govchain.ErrNoRecord when the chain proves it absent.
	GetAt(ctx context.Context, h int64, key []byte, m proto.Message) (int64, error)
	// ExceptionsIn lists a pipe range's exception records at a height.
	ExceptionsIn(ctx context.Context, h int64, pipe string, first, last uint64) ([]*govchain.TxException, error)
}

// GovFollowerConfig configures a GovFollower. Chain, Conn and DB are
// required; the rest have defaults (withDefaults).
type GovFollowerConfig struct {
	Chain GovChain
	Conn  driver.Conn
	DB    string // the ledger database (migrated: the follower does not migrate)
	// A flush (one INSERT per table) happens every FlushBlocks blocks or
	// every FlushInterval, whichever comes first (100 blocks, 1 s), and
	// whenever MaxRows rows are held (10 000): the bound on memory.
	FlushBlocks   int
	FlushInterval time.Duration
	MaxRows       int
	// Once caught up, the follower waits for the chain's next block (its
	// block subscription) or Poll (1 s), whichever is first: the poll
	// covers a subscription that is gone, which is tried again every
	// 10 polls.
	Poll time.Duration
	// Retry is the schedule of a failed read or write (100 ms doubling to
	// 10 s, jittered); OpTimeout bounds each attempt (30 s).
	Retry     backoff.Policy
	OpTimeout time.Duration
	Log       *slog.Logger
}

func (c GovFollowerConfig) withDefaults() GovFollowerConfig {
	if c.FlushBlocks <= 0 {
		c.FlushBlocks = 100
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 10_000
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Retry == (backoff.Policy{}) {
		c.Retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: true}
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// GovFollowerStats is what a GovFollower has done.
type GovFollowerStats struct {
	Written int64 // the last height whose rows are all in ClickHouse
	Chain   int64 // the chain's height when last asked
	Blocks  uint64
	Txs     uint64
	Flushes uint64
	Retries uint64 // failed reads and writes, each retried
	Peak    int    // the most rows held at once (at most MaxRows)
}

// Lag is how many blocks the ledger is behind the chain.
func (s GovFollowerStats) Lag() int64 { return max(s.Chain-s.Written, 0) }

// GovFollower follows the governance chain block by block and writes its
// records into the ledger: one governance row per tx, the anchors'
// three stages, the exception records' states. See docs/analytics.md, "The
// governance follower".
type GovFollower struct {
	cfg GovFollowerConfig
	q   string // the quoted database

	// Held rows, owned by Run's goroutine. Anchors and exceptions are keyed
	// so that a record changed twice before a flush is one row.
	gov        []govRow
	anchors    map[anchorKey]*anchorRow
	exceptions map[exceptionKey]*exceptionRow
	orgs       map[crypto.Address]string // signer -> org: an account never changes org

	mu    sync.Mutex // guards stats
	stats GovFollowerStats
}

// maxOrgCache bounds the signer -> org cache; it is emptied when full.
const maxOrgCache = 4096

// NewGovFollower checks cfg and returns a follower; Run starts it.
func NewGovFollower(cfg GovFollowerConfig) (*GovFollower, error) {
	switch {
	case cfg.Chain == nil:
		return nil, errors.New("analytics: governance follower: no chain client")
	case cfg.Conn == nil:
		return nil, errors.New("analytics: governance follower: no ClickHouse connection")
	case !identifier.MatchString(cfg.DB):
		return nil, fmt.Errorf("%w: %q (letters, digits and _ only)", ErrBadDatabase, cfg.DB)
	}
	cfg = cfg.withDefaults()
	f := &GovFollower{cfg: cfg, q: "`" + cfg.DB + "`", orgs: map[crypto.Address]string{}}
	f.reset()
	return f, nil
}

func (f *GovFollower) reset() {
	f.gov = f.gov[:0]
	f.anchors = map[anchorKey]*anchorRow{}
	f.exceptions = map[exceptionKey]*exceptionRow{}
}

func (f *GovFollower) held() int { return len(f.gov) + len(f.anchors) + len(f.exceptions) }

// Stats returns a snapshot of what the follower has done.
func (f *GovFollower) Stats() GovFollowerStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *GovFollower) note(fn func(*GovFollowerStats)) {
	f.mu.Lock()
	fn(&f.stats)
	f.mu.Unlock()
}

// Run follows the chain until ctx ends, then makes a last flush (one
// attempt of at most 5 s: what it cannot write is read again at the next
// start) and returns nil. No failure ends it: every one is retried.
//
//  1. It resumes at the highest height in governance (FINAL): that block
//     may be partly written, so it is read again; its rows come out
//     identical and collapse.
//  2. Block by block: the block and its results, then each tx in order:
//     its anchor and exception rows (from the message and the state the
//     chain holds after the block), then its governance row.
//  3. A flush writes anchors, exceptions, then governance, one batch each:
//     a governance row is never in ClickHouse before its tx's effects, so
//     step 1 never resumes past a block whose effects are missing.
//
// Every read and write is retried with backoff until it succeeds or ctx
// ends: a block is never skipped.
func (f *GovFollower) Run(ctx context.Context) error {
	next, err := f.resume(ctx)
	if err != nil {
		return nil // ctx ended
	}
	f.cfg.Log.Info("governance follower started", "from", next, "db", f.cfg.DB)
	lastFlush, unflushed, done := time.Now(), 0, next-1
	var blocks <-chan int64 // the block subscription; nil: none yet, or gone
	var subscribed time.Time
	flush := func() error {
		if err := f.flush(ctx); err != nil {
			return err
		}
		f.note(func(s *GovFollowerStats) { s.Written, s.Flushes = max(s.Written, done), s.Flushes+1 })
		lastFlush, unflushed = time.Now(), 0
		return nil
	}
	defer func() {
		// A last flush of whole blocks, with a context of its own: ctx has
		// ended. Rows it cannot write are read again at the next start.
		fctx, cancel := context.WithTimeout(context.Background(), min(f.cfg.OpTimeout, 5*time.Second))
		defer cancel()
		if err := f.write(fctx); err == nil {
			f.note(func(s *GovFollowerStats) { s.Written = max(s.Written, done) })
		}
	}()
	for {
		var tip int64
		if err := f.retry(ctx, "chain height", func(ctx context.Context) (err error) {
			tip, err = f.cfg.Chain.Height(ctx)
			return err
		}); err != nil {
			return nil
		}
		f.note(func(s *GovFollowerStats) { s.Chain = tip })
		for ; next <= tip; next++ {
			if err := f.block(ctx, next); err != nil {
				return nil
			}
			done = next
			f.note(func(s *GovFollowerStats) { s.Blocks++ })
			if unflushed++; unflushed >= f.cfg.FlushBlocks || time.Since(lastFlush) >= f.cfg.FlushInterval {
				if err := flush(); err != nil {
					return nil
				}
			}
		}
		if done > f.Stats().Written && time.Since(lastFlush) >= f.cfg.FlushInterval {
			if err := flush(); err != nil {
				return nil
			}
		}
		wait := f.cfg.Poll
		if done > f.Stats().Written {
			wait = min(wait, max(f.cfg.FlushInterval-time.Since(lastFlush), time.Millisecond))
		}
		if blocks == nil && time.Since(subscribed) >= 10*f.cfg.Poll {
			subscribed = time.Now()
			if ch, err := f.cfg.Chain.Blocks(ctx); err == nil {
				blocks = ch
			} else {
				f.cfg.Log.Warn("governance follower: no block subscription; polling", "every", f.cfg.Poll, "err", err)
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case _, ok := <-blocks:
			if !ok {
				blocks = nil
			}
		case <-timer.C:
		}
		timer.Stop()
	}
}

// resume returns the first height to read: the highest in governance, or
// 1 for an empty ledger.
func (f *GovFollower) resume(ctx context.Context) (int64, error) {
	var top uint64
	err := f.retry(ctx, "resume height", func(ctx context.Context) error {
		return f.cfg.Conn.QueryRow(ctx, "SELECT max(height) FROM "+f.q+".governance FINAL").Scan(&top)
	})
	if err != nil {
		return 0, err
	}
	f.note(func(s *GovFollowerStats) { s.Written = max(int64(top)-1, 0) })
	return max(int64(top), 1), nil
}

// retry runs op until it succeeds, with backoff between attempts, each
// bounded by OpTimeout; it returns only ctx's error.
func (f *GovFollower) retry(ctx context.Context, what string, op func(context.Context) error) error {
	for n := 1; ; n++ {
		octx, cancel := context.WithTimeout(ctx, f.cfg.OpTimeout)
		err := op(octx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.note(func(s *GovFollowerStats) { s.Retries++ })
		d := f.cfg.Retry.Delay(n)
		// A first failure is often the tip's results not stored yet.
		lvl := slog.LevelWarn
		if n == 1 {
			lvl = slog.LevelDebug
		}
		f.cfg.Log.Log(ctx, lvl, "governance follower: retrying", "what", what, "attempt", n, "in", d, "err", err)
		if err := backoff.Wait(ctx, d); err != nil {
			return err
		}
	}
}

// block reads height h and turns each of its txs into rows.
func (f *GovFollower) block(ctx context.Context, h int64) error {
	var blk *types.Block
	var results []*abci.ExecTxResult
	err := f.retry(ctx, fmt.Sprintf("block %d", h), func(ctx context.Context) error {
		b, err := f.cfg.Chain.RPC().Block(ctx, &h)
		if err != nil {
			return err
		}
		r, err := f.cfg.Chain.RPC().BlockResults(ctx, &h)
		if err != nil {
			// A height is announced a moment before its results are stored.
			return err
		}
		if b.Block == nil {
			return fmt.Errorf("block %d: the node sent no block", h)
		}
		if len(r.TxResults) != len(b.Block.Txs) {
			return fmt.Errorf("block %d: results for %d txs, the block has %d", h, len(r.TxResults), len(b.Block.Txs))
		}
		blk, results = b.Block, r.TxResults
		return nil
	})
	if err != nil {
		return err
	}
	at := blk.Header.Time.UTC()
	for i, raw := range blk.Txs {
		if err := f.tx(ctx, tx{height: h, index: i, raw: raw, res: results[i], time: at}); err != nil {
			return err
		}
	}
	f.note(func(s *GovFollowerStats) { s.Txs += uint64(len(blk.Txs)) })
	return nil
}

// tx is one tx of a block being read.
type tx struct {
	height int64
	index  int
	raw    types.Tx
	res    *abci.ExecTxResult
	time   time.Time
	hash   string
}

func (f *GovFollower) tx(ctx context.Context, t tx) error {
	t.hash = hex.EncodeToString(t.raw.Hash())
	row := govRow{height: uint64(t.height), index: uint32(t.index), hash: t.hash, time: t.time, msgType: "unknown", code: t.res.Code}
	// The tx is in a block: its size was the chain's business. A tx that
	// does not decode is still a row (its code says why).
	dec, rej := govchain.DecodeTx(t.raw, f.cfg.Chain.ChainID(), len(t.raw)+1)
	if rej == nil {
		row.msgType = govchain.MsgName(dec.Body)
		row.signer = dec.Sender.String()
		org, err := f.orgOf(ctx, t.height, dec.Sender)
		if err != nil {
			return err
		}
		row.org = org
	}
	row.summary = summary(row.msgType, t.res)
	if rej == nil && t.res.Code == govchain.CodeOK {
		if err := f.effects(ctx, t, dec.Body); err != nil {
			return err
		}
	}
	if err := f.room(ctx); err != nil {
		return err
	}
	f.gov = append(f.gov, row)
	return nil
}

// effects adds the anchor and exception rows an accepted tx made.
func (f *GovFollower) effects(ctx context.Context, t tx, body *govchain.TxBody) error {
	switch m := body.Msg.(type) {
	case *govchain.TxBody_OpenBatches:
		for _, b := range m.OpenBatches.Batches {
			k := anchorKey{b.FromRelay, b.BatchSeq}
			a, ok := f.anchors[k]
			if !ok {
				if err := f.room(ctx); err != nil {
					return err
				}
				a = &anchorRow{key: k}
				f.anchors[k] = a
			}
			a.toRelay, a.root = b.ToRelay, hex.EncodeToString(b.MerkleRoot)
			a.open = stage{uint64(t.height), t.hash, t.time}
			a.version = uint64(t.height)
		}
	case *govchain.TxBody_AnchorReceipts:
		for _, b := range m.AnchorReceipts.Batches {
			a, err := f.anchor(ctx, t, anchorKey{b.FromRelay, b.BatchSeq})
			if err != nil {
				return err
			}
			if a == nil {
				continue
			}
			a.receipt = stage{uint64(t.height), t.hash, t.time}
		}
	case *govchain.TxBody_ConfirmBatches:
		for _, b := range m.ConfirmBatches.Batches {
			a, err := f.anchor(ctx, t, anchorKey{b.FromRelay, b.BatchSeq})
			if err != nil {
				return err
			}
			if a == nil {
				continue
			}
			a.confirm = stage{uint64(t.height), t.hash, t.time}
			if err := f.confirmed(ctx, t, a.key); err != nil {
				return err
			}
		}
	case *govchain.TxBody_TxException:
		return f.exceptionRows(ctx, t, m.TxException.Packets)
	case *govchain.TxBody_Resolve:
		return f.exceptionRows(ctx, t, m.Resolve.Packets)
	}
	return nil
}

// anchor returns the held row of a batch anchor for a later stage at t:
// the held one, else the ledger's (FINAL), else one made from the chain's
// record (a ledger that lost the open row: its tx and time stay unknown),
// else nil (recordOf logged it).
func (f *GovFollower) anchor(ctx context.Context, t tx, k anchorKey) (*anchorRow, error) {
	if a, ok := f.anchors[k]; ok {
		a.version = max(a.version, uint64(t.height))
		return a, nil
	}
	if err := f.room(ctx); err != nil {
		return nil, err
	}
	a := &anchorRow{key: k}
	var found bool
	err := f.retry(ctx, "read anchor", func(ctx context.Context) error {
		err := f.cfg.Conn.QueryRow(ctx, "SELECT to_relay, batch_root, open_height, open_tx, open_time, receipt_height, receipt_tx, receipt_time, "+
			"confirm_height, confirm_tx, confirm_time FROM "+f.q+".anchors FINAL WHERE from_relay = ? AND batch_seq = ?", k.from, k.seq).
			Scan(&a.toRelay, &a.root, &a.open.height, &a.open.tx, &a.open.time, &a.receipt.height, &a.receipt.tx, &a.receipt.time,
				&a.confirm.height, &a.confirm.tx, &a.confirm.time)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return nil, err
	}
	if !found {
		rec := &govchain.BatchAnchor{}
		if found, err := f.recordOf(ctx, t.height, govchain.KeyBatch(k.from, k.seq), rec); err != nil || !found {
			return nil, err
		}
		a.toRelay, a.root = rec.ToRelay, hex.EncodeToString(rec.MerkleRoot)
		a.open, a.receipt.time, a.confirm.time = stage{height: rec.OpenedHeight, time: notYet}, notYet, notYet
	}
	a.version = uint64(t.height)
	f.anchors[k] = a
	return a, nil
}

// state reads key as the chain holds it after block h, or, when the node
// no longer keeps that height, at the latest height (records of the kinds
// read here only move forward; callers compare their height). It returns
// govchain.ErrNoRecord, not retried, when the chain proves the record
// absent; other errors are retried.
func (f *GovFollower) state(ctx context.Context, h int64, key []byte, m proto.Message) error {
	var absent bool
	err := f.retry(ctx, fmt.Sprintf("record %q at %d", key, h), func(ctx context.Context) error {
		_, err := f.cfg.Chain.GetAt(ctx, h, key, m)
		if err != nil && !errors.Is(err, govchain.ErrNoRecord) {
			_, err = f.cfg.Chain.GetAt(ctx, 0, key, m)
		}
		if errors.Is(err, govchain.ErrNoRecord) {
			absent = true
			return nil
		}
		return err
	})
	if err == nil && absent {
		return govchain.ErrNoRecord
	}
	return err
}

// recordOf is state for a record an accepted tx made: an absence, which
// only a node that lies or a bug explains, is logged and the record left
// out (found false), rather than holding the follower forever.
func (f *GovFollower) recordOf(ctx context.Context, h int64, key []byte, m proto.Message) (found bool, err error) {
	err = f.state(ctx, h, key, m)
	if errors.Is(err, govchain.ErrNoRecord) {
		f.cfg.Log.Error("governance follower: the chain has no record an accepted tx made", "key", fmt.Sprintf("%q", key), "height", h)
		return false, nil
	}
	return err == nil, err
}

// exceptionRows adds the rows of the exception records a tx-exception or
// resolve tx changed, as the chain holds them after the block.
func (f *GovFollower) exceptionRows(ctx context.Context, t tx, packets []*govchain.PacketRef) error {
	for _, p := range packets {
		ex := &govchain.TxException{}
		found, err := f.recordOf(ctx, t.height, govchain.KeyException(p.Pipe, p.Seq), ex)
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		if err := f.exception(ctx, t, ex); err != nil {
			return err
		}
	}
	return nil
}

// confirmed adds the rows of the exception records that confirming batch
// k moved to CONFIRMED: no message names them, so they are the records of
// the batch's ranges that changed in this block.
func (f *GovFollower) confirmed(ctx context.Context, t tx, k anchorKey) error {
	rec := &govchain.BatchAnchor{}
	if _, err := f.recordOf(ctx, t.height, govchain.KeyBatch(k.from, k.seq), rec); err != nil {
		return err
	}
	for _, rg := range rec.Ranges {
		var exs []*govchain.TxException
		err := f.retry(ctx, "exceptions of "+rg.Pipe, func(ctx context.Context) (err error) {
			if exs, err = f.cfg.Chain.ExceptionsIn(ctx, t.height, rg.Pipe, rg.First, rg.Last); err != nil {
				exs, err = f.cfg.Chain.ExceptionsIn(ctx, 0, rg.Pipe, rg.First, rg.Last)
			}
			return err
		})
		if err != nil {
			return err
		}
		for _, ex := range exs {
			if ex.State == govchain.PacketState_PACKET_CONFIRMED {
				if err := f.exception(ctx, t, ex); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// exception holds the row of record ex for tx t, if ex is the state this
// block left (a record read at a later height is written by the block
// that made it).
func (f *GovFollower) exception(ctx context.Context, t tx, ex *govchain.TxException) error {
	if ex.Height != uint64(t.height) {
		return nil
	}
	k := exceptionKey{ex.Pipe, ex.Seq}
	if _, ok := f.exceptions[k]; !ok {
		if err := f.room(ctx); err != nil {
			return err
		}
	}
	row := &exceptionRow{key: k, packetID: hex.EncodeToString(ex.PacketId), state: strings.TrimPrefix(ex.State.String(), "PACKET_"),
		reason: ex.Reason, height: ex.Height, tx: t.hash, updated: t.time, attempts: ex.Attempts}
	for _, tr := range ex.History {
		if tr.State == govchain.PacketState_PACKET_RESOLVED {
			row.resolvedBy = hex.EncodeToString(tr.By)
		}
	}
	f.exceptions[k] = row
	return nil
}

// orgOf is the org of the account addr after block h (cached; "" for a
// key with no account, such as a refused membership application's). It
// reads at h, not at the latest height: a proof at h needs header h+1,
// which a follower behind the chain has (and verifies once for every read
// at h), where one at the latest height waits for the next block.
func (f *GovFollower) orgOf(ctx context.Context, h int64, addr crypto.Address) (string, error) {
	if org, ok := f.orgs[addr]; ok {
		return org, nil
	}
	acct := &govchain.Account{}
	switch err := f.state(ctx, h, govchain.KeyAccount(addr), acct); {
	case errors.Is(err, govchain.ErrNoRecord):
		return "", nil
	case err != nil:
		return "", err
	}
	if len(f.orgs) >= maxOrgCache {
		clear(f.orgs)
	}
	f.orgs[addr] = acct.Org
	return acct.Org, nil
}

// room flushes when one more row would pass MaxRows. The held rows may
// then cover part of a block: that is safe, as Run's step 1 explains.
func (f *GovFollower) room(ctx context.Context) error {
	if f.held() >= f.cfg.MaxRows {
		if err := f.flush(ctx); err != nil {
			return err
		}
		f.note(func(s *GovFollowerStats) { s.Flushes++ })
	}
	n := f.held() + 1 // with the row the caller adds next
	f.note(func(s *GovFollowerStats) { s.Peak = max(s.Peak, n) })
	return nil
}

// flush writes the held rows, retrying until it succeeds, and drops them.
func (f *GovFollower) flush(ctx context.Context) error {
	if err := f.retry(ctx, "write", f.write); err != nil {
		return err
	}
	f.reset()
	return nil
}

// write inserts the held rows, one batch per table: anchors, exceptions,
// then governance (see Run). A retry after a partial write inserts the
// same rows again, which collapse.
func (f *GovFollower) write(ctx context.Context) error {
	if len(f.anchors) > 0 {
		err := f.insert(ctx, "anchors (from_relay, to_relay, batch_seq, batch_root, open_height, open_tx, open_time, "+
			"receipt_height, receipt_tx, receipt_time, confirm_height, confirm_tx, confirm_time, version)", func(b driver.Batch) error {
			for _, a := range f.anchors {
				if err := b.Append(a.key.from, a.toRelay, a.key.seq, a.root, a.open.height, a.open.tx, dt(a.open.time),
					a.receipt.height, a.receipt.tx, dt(a.receipt.time), a.confirm.height, a.confirm.tx, dt(a.confirm.time), a.version); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(f.exceptions) > 0 {
		err := f.insert(ctx, "exceptions (pipe, seq, packet_id, state, reason, height, tx_hash, updated, attempts, resolved_by, version)", func(b driver.Batch) error {
			for _, e := range f.exceptions {
				if err := b.Append(e.key.pipe, e.key.seq, e.packetID, e.state, e.reason, e.height, e.tx, dt(e.updated), e.attempts, e.resolvedBy, e.height); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(f.gov) > 0 {
		return f.insert(ctx, "governance (height, tx_index, tx_hash, time, msg_type, signer, org, code, summary, version)", func(b driver.Batch) error {
			for _, g := range f.gov {
				if err := b.Append(g.height, g.index, g.hash, dt(g.time), g.msgType, g.signer, g.org, g.code, g.summary, g.height); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return nil
}

// insert sends one batch: PrepareBatch, Append, Send (an INSERT with
// values through Exec hangs on 18.16).
func (f *GovFollower) insert(ctx context.Context, into string, fill func(driver.Batch) error) error {
	b, err := f.cfg.Conn.PrepareBatch(ctx, "INSERT INTO "+f.q+"."+into)
	if err != nil {
		return fmt.Errorf("analytics: prepare insert into %s: %w", into, err)
	}
	if err := fill(b); err != nil {
		return errors.Join(fmt.Errorf("analytics: insert into %s: %w", into, err), b.Abort())
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("analytics: insert into %s: %w", into, err)
	}
	return nil
}

// notYet is the ledger's "not yet" time (docs/analytics.md: 1970-01-01).
var notYet = time.Unix(0, 0).UTC()

// dt is t for a DateTime column: the zero time reads as not yet.
func dt(t time.Time) time.Time {
	if t.Before(notYet) {
		return notYet
	}
	return t.UTC()
}

// maxSummary bounds governance.summary, in bytes.
const maxSummary = 512

// summary is a short line for people: the chain's refusal, or the events
// the tx emitted ("anchor kind=open batches=1 packets=3"), or the
// message's name for a tx that emitted none.
func summary(name string, r *abci.ExecTxResult) string {
	var s string
	if r.Code != govchain.CodeOK {
		s = fmt.Sprintf("refused (code %d): %s", r.Code, r.Log)
	} else {
		var b strings.Builder
		for i, ev := range r.Events {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(ev.Type)
			for _, a := range ev.Attributes {
				fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
			}
		}
		s = b.String()
		if s == "" {
			s = name
		}
	}
	if len(s) > maxSummary {
		s = s[:maxSummary]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

type govRow struct {
	height                        uint64
	index                         uint32
	hash                          string
	time                          time.Time
	msgType, signer, org, summary string
	code                          uint32
}

type anchorKey struct {
	from string
	seq  uint64
}

// stage is one governance record of a batch: its block, tx and time.
type stage struct {
	height uint64
	tx     string
	time   time.Time
}

type anchorRow struct {
	key                    anchorKey
	toRelay, root          string
	open, receipt, confirm stage
	version                uint64
}

type exceptionKey struct {
	pipe string
	seq  uint64
}

type exceptionRow struct {
	key                                     exceptionKey
	packetID, state, reason, tx, resolvedBy string
	height                                  uint64
	updated                                 time.Time
	attempts                                uint32
}
