package analytics

import (
	"context"
	"encoding/hex"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Kind names one kind of difference between the parties. The names are
// stable: scripts and alerts match on them.
type Kind string

const (
	// DeliveryMissing: the ledger holds a delivery (receipt DELIVERED with
	// a destination tx) that the destination chain has no record of.
	DeliveryMissing Kind = "delivery_missing"
	// RollbackUnrecorded: the source chain rolled the request back and the
	// ledger has no ROLLED_BACK exception for it.
	RollbackUnrecorded Kind = "rollback_unrecorded"
	// ExecutedTwice: the destination chain executed the packet more than
	// once.
	ExecutedTwice Kind = "executed_twice"
	// ConfirmedNotOnChain: the ledger says the packet is confirmed (its
	// batch's confirmation anchor, or a CONFIRMED exception) and the
	// destination chain has no execution of it.
	ConfirmedNotOnChain Kind = "confirmed_not_on_chain"
)

// Exception states (govchain TxException) that reconciliation reads.
const (
	stateRolledBack = "ROLLED_BACK"
	stateManual     = "MANUAL"
	stateResolved   = "RESOLVED"
	stateConfirmed  = "CONFIRMED"
)

// DefaultMaxDifferences bounds the differences a Reconciliation lists (the counts
// stay exact), so that a period where everything differs still fits in
// memory and on a screen.
const DefaultMaxDifferences = 10000

// ReconcileInput is what Reconcile compares.
type ReconcileInput struct {
	Conn     driver.Conn
	Database string
	// From and To bound the period: the ledger's packets with From <=
	// event time < To. Each pipe's sequences from the first to the last of
	// those are compared, on the ledger and on the chains.
	From, To time.Time
	// Pipe restricts the comparison to one pipe; empty: every pipe with
	// packets in the period.
	Pipe string
	// Chains are the subchains' records by subchain id. Every source and
	// destination chain of a pipe compared must be here.
	Chains map[string]subchain.Records
	// MaxDifferences bounds Reconciliation.Differences; 0 means
	// DefaultMaxDifferences.
	MaxDifferences int
}

// Reconciliation is the outcome of Reconcile.
type Reconciliation struct {
	From        time.Time    `json:"from"`
	To          time.Time    `json:"to"`
	Pipes       []PipeCounts `json:"pipes"`
	Differences []Difference `json:"differences"`
	Found       int          `json:"found"`     // differences found, listed or not
	Truncated   bool         `json:"truncated"` // Found > len(Differences)
	ByKind      map[Kind]int `json:"by_kind"`
}

// Clean reports whether no party disagrees with another.
func (r *Reconciliation) Clean() bool { return r.Found == 0 }

// PipeCounts is one pipe's totals for the period, each from the party
// that owns the fact.
type PipeCounts struct {
	Pipe        string `json:"pipe"`
	SourceChain string `json:"source_chain"`
	DestChain   string `json:"dest_chain"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	Packets     uint64 `json:"packets"`     // ledger: packet rows (events topic)
	Requests    uint64 `json:"requests"`    // source chain: requests accepted
	Deliveries  uint64 `json:"deliveries"`  // destination chain: packets executed (DELIVERED)
	Receipts    uint64 `json:"receipts"`    // ledger: packets with a receipt
	Anchored    uint64 `json:"anchored"`    // ledger: packets whose batch (named by their receipt) has an open anchor
	Confirmed   uint64 `json:"confirmed"`   // ledger: packets confirmed (exception CONFIRMED, or no exception and the batch confirmed)
	RolledBack  uint64 `json:"rolled_back"` // source chain: requests rolled back
	Differences uint64 `json:"differences"`
}

// Difference is one packet on which the parties disagree, with what each
// one says.
type Difference struct {
	Kind     Kind   `json:"kind"`
	Pipe     string `json:"pipe"`
	Seq      uint64 `json:"seq"`
	PacketID string `json:"packet_id"`
	Says
}

// Says is what every party says about one packet.
type Says struct {
	Source SourceSays `json:"source"`
	Ledger LedgerSays `json:"ledger"`
	Dest   DestSays   `json:"dest"`
}

// SourceSays is the source chain's record of the request.
type SourceSays struct {
	Requested  bool   `json:"requested"`
	RolledBack bool   `json:"rolled_back"`
	Reason     string `json:"reason,omitempty"` // the rollback's
}

// LedgerSays is the ledger's record of the packet.
type LedgerSays struct {
	Seen      bool   `json:"seen"`              // a packets row (from the events topic)
	Receipt   string `json:"receipt,omitempty"` // receipt status, "" when none
	DestTx    string `json:"dest_tx,omitempty"` // the receipt's destination tx (hex); Compare asks only whether there is one
	Exception string `json:"exception,omitempty"`
	Anchored  bool   `json:"anchored"`
	Confirmed bool   `json:"confirmed"` // the batch's confirmation anchor
}

// DestSays is the destination chain's record of the packet.
type DestSays struct {
	Status string `json:"status,omitempty"` // "" when the chain has no record
	Tx     string `json:"tx,omitempty"`
	Height uint64 `json:"height,omitempty"`
	Count  uint64 `json:"count"` // executions
}

var statusDelivered = statusName(amdp.StatusDelivered)

// statusNames are the receipt statuses as the ledger writes them
// ("DELIVERED"), by value: a lookup, not protobuf's reflection, per
// packet.
var statusNames = func() []string {
	var out []string
	for i := int32(0); ; i++ {
		n, ok := amdp.ReceiptStatus_name[i]
		if !ok {
			return out
		}
		out = append(out, strings.TrimPrefix(n, "RECEIPT_STATUS_"))
	}
}()

func statusName(s amdp.ReceiptStatus) string {
	if int(s) >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("STATUS_%d", s)
}

// destTxPending stands for a receipt's dest tx during the merge, which
// reads only whether there is one; the differences listed get the real
// one at the end of their pipe.
const destTxPending = "(pending)"

// confirmed is the ledger's effective confirmation: a packet's exception,
// when it has one, governs its state (docs/DESIGN.md), else its batch's
// confirmation anchor.
func (l *LedgerSays) confirmed() bool {
	if l.Exception != "" {
		return l.Exception == stateConfirmed
	}
	return l.Confirmed
}

// Compare is the deterministic core: the differences in what the parties
// say about one packet, in a fixed order. It does no I/O.
//
// A packet whose exception is MANUAL or RESOLVED is in a person's hands:
// the ledger knows it left the happy path, so nothing is reported for it.
// ROLLED_BACK records the rollback and says the packet is not expected on
// the destination; a second execution is still reported.
func Compare(s Says) []Kind {
	var out []Kind
	exc := s.Ledger.Exception
	if exc == stateManual || exc == stateResolved {
		return nil
	}
	executed := s.Dest.Status == statusDelivered
	expected := exc != stateRolledBack
	switch {
	case expected && !executed && s.Ledger.confirmed():
		out = append(out, ConfirmedNotOnChain) // the stronger claim of the two
	case expected && !executed && s.Ledger.Receipt == statusDelivered && s.Ledger.DestTx != "":
		out = append(out, DeliveryMissing)
	}
	if s.Source.RolledBack && exc != stateRolledBack {
		out = append(out, RollbackUnrecorded)
	}
	if executed && s.Dest.Count > 1 {
		out = append(out, ExecutedTwice)
	}
	return out
}

// ledger is the ClickHouse side, read in reconcile_ledger.go.
type ledger interface {
	pipes(ctx context.Context, from, to time.Time, pipe string) ([]PipeCounts, error)
	packets(ctx context.Context, pipe string, first, last uint64) iter.Seq2[ledgerPacket, error]
	exceptions(ctx context.Context, pipe string, first, last uint64) iter.Seq2[ledgerException, error]
	destTxs(ctx context.Context, packetIDs []string) (map[string]string, error)
}

// ledgerPacket is one packets row with its receipt and its batch's anchor.
type ledgerPacket struct {
	seq       uint64
	receipt   string
	hasDestTx bool
	anchored  bool
	confirmed bool
}

type ledgerException struct {
	seq   uint64
	state string
}

// Reconcile compares, for every packet of the period, what the source
// chain, the ledger and the destination chain say (see Compare), and
// counts each pipe's traffic. A difference is a finding in the Reconciliation, not
// an error; an error means the comparison could not be made.
//
// Each pipe is one sort-merge join by sequence of five streams read in
// sequence order: the ledger's packets (with receipts and anchors) and
// exceptions from ClickHouse, the source chain's requests and rollbacks,
// and the destination chain's executions. Nothing is looked up per
// packet, and memory is bounded by MaxDifferences, not by the period.
func Reconcile(ctx context.Context, in ReconcileInput) (Reconciliation, error) {
	if !identifier.MatchString(in.Database) {
		return Reconciliation{}, fmt.Errorf("%w: %q", ErrBadDatabase, in.Database)
	}
	if !in.From.Before(in.To) {
		return Reconciliation{}, fmt.Errorf("%w: from %s is not before to %s", ErrBadPeriod, in.From.Format(time.RFC3339), in.To.Format(time.RFC3339))
	}
	return reconcile(ctx, chLedger{conn: in.Conn, db: in.Database}, in)
}

func reconcile(ctx context.Context, l ledger, in ReconcileInput) (Reconciliation, error) {
	max := in.MaxDifferences
	if max <= 0 {
		max = DefaultMaxDifferences
	}
	rep := Reconciliation{From: in.From, To: in.To, ByKind: map[Kind]int{}, Pipes: []PipeCounts{}, Differences: []Difference{}}
	pipes, err := l.pipes(ctx, in.From, in.To, in.Pipe)
	if err != nil {
		return Reconciliation{}, err
	}
	var missing []string
	for _, p := range pipes {
		for _, id := range []string{p.SourceChain, p.DestChain} {
			if _, ok := in.Chains[id]; !ok && !slices.Contains(missing, id) {
				missing = append(missing, id)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return Reconciliation{}, fmt.Errorf("%w: %s", ErrChainMissing, strings.Join(missing, ", "))
	}
	listed := 0
	for _, p := range pipes {
		pc, err := reconcilePipe(ctx, l, in.Chains[p.SourceChain], in.Chains[p.DestChain], p, func(d Difference) {
			rep.Found++
			rep.ByKind[d.Kind]++
			if len(rep.Differences) < max {
				rep.Differences = append(rep.Differences, d)
			}
		})
		if err != nil {
			return Reconciliation{}, fmt.Errorf("analytics: reconcile pipe %s: %w", p.Pipe, err)
		}
		if err := fillDestTxs(ctx, l, rep.Differences[listed:]); err != nil {
			return Reconciliation{}, err
		}
		listed = len(rep.Differences)
		rep.Pipes = append(rep.Pipes, pc)
	}
	rep.Truncated = rep.Found > len(rep.Differences)
	return rep, nil
}

// fillDestTxs replaces the pending dest txs of listed differences by the
// receipts' own, in one query.
func fillDestTxs(ctx context.Context, l ledger, ds []Difference) error {
	var ids []string
	for _, d := range ds {
		if d.Ledger.DestTx == destTxPending {
			ids = append(ids, d.PacketID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	txs, err := l.destTxs(ctx, ids)
	if err != nil {
		return err
	}
	for i := range ds {
		if ds[i].Ledger.DestTx == destTxPending {
			ds[i].Ledger.DestTx = txs[ds[i].PacketID]
		}
	}
	return nil
}

// cursor is one pulled stream of a merge: cur is valid while ok.
type cursor[T any] struct {
	next func() (T, error, bool)
	stop func()
	cur  T
	ok   bool
	seq  func(T) uint64
}

func pull[T any](s iter.Seq2[T, error], seq func(T) uint64) *cursor[T] {
	next, stop := iter.Pull2(prefetch(s))
	return &cursor[T]{next: next, stop: stop, seq: seq}
}

// prefetch runs s in a goroutine of its own that hands the records over
// in slices of up to 1024 through a channel of 4: the five streams of a
// merge are decoded on every core while the merge runs, in bounded
// memory. Ending the loop early stops the goroutine and waits for it.
func prefetch[T any](s iter.Seq2[T, error]) iter.Seq2[T, error] {
	type chunk struct {
		recs []T
		err  error
	}
	return func(yield func(T, error) bool) {
		ch := make(chan chunk, 4)
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(ch)
			send := func(c chunk) bool {
				select {
				case ch <- c:
					return true
				case <-done:
					return false
				}
			}
			buf := make([]T, 0, 1024)
			for v, err := range s {
				if err != nil {
					send(chunk{recs: buf, err: err})
					return
				}
				if buf = append(buf, v); len(buf) == cap(buf) {
					if !send(chunk{recs: buf}) {
						return
					}
					buf = make([]T, 0, 1024)
				}
			}
			send(chunk{recs: buf})
		})
		defer func() {
			close(done)
			wg.Wait()
		}()
		for c := range ch {
			for _, v := range c.recs {
				if !yield(v, nil) {
					return
				}
			}
			if c.err != nil {
				var zero T
				yield(zero, c.err)
				return
			}
		}
	}
}

// advance moves to the next record; a stream whose sequences do not grow
// is refused, since the merge relies on their order.
func (c *cursor[T]) advance() error {
	prev, had := c.cur, c.ok
	v, err, ok := c.next()
	if err != nil {
		return err
	}
	c.cur, c.ok = v, ok
	if ok && had && c.seq(v) <= c.seq(prev) {
		return fmt.Errorf("stream out of order: sequence %d after %d", c.seq(v), c.seq(prev))
	}
	return nil
}

// at reports whether the cursor stands on sequence s.
func (c *cursor[T]) at(s uint64) bool { return c.ok && c.seq(c.cur) == s }

// reconcilePipe merges the pipe's five streams by sequence: every
// sequence that any stream holds is compared once.
//
//  1. Open the five streams over [FirstSeq, LastSeq], each in sequence
//     order.
//  2. Take the smallest sequence any stream stands on; gather what each
//     stream standing on it says, and advance those streams.
//  3. Count, Compare, report; repeat until every stream has ended.
func reconcilePipe(ctx context.Context, l ledger, src, dst subchain.Records, p PipeCounts, report func(Difference)) (PipeCounts, error) {
	first, last := p.FirstSeq, p.LastSeq
	pk := pull(l.packets(ctx, p.Pipe, first, last), func(r ledgerPacket) uint64 { return r.seq })
	defer pk.stop()
	ex := pull(l.exceptions(ctx, p.Pipe, first, last), func(r ledgerException) uint64 { return r.seq })
	defer ex.stop()
	rq := pull(src.Requests(ctx, p.Pipe, first, last), func(r subchain.Request) uint64 { return r.Seq })
	defer rq.stop()
	rb := pull(src.Rollbacks(ctx, p.Pipe, first, last), func(r subchain.Rollback) uint64 { return r.Seq })
	defer rb.stop()
	dx := pull(dst.Executions(ctx, p.Pipe, first, last), func(r subchain.Execution) uint64 { return r.Seq })
	defer dx.stop()
	for _, err := range []error{pk.advance(), ex.advance(), rq.advance(), rb.advance(), dx.advance()} {
		if err != nil {
			return p, err
		}
	}
	p.Packets = 0 // recounted from the stream, over the whole sequence range
	for {
		s, any := ^uint64(0), false
		for _, c := range []struct {
			ok  bool
			seq uint64
		}{{pk.ok, seqOr(pk)}, {ex.ok, seqOr(ex)}, {rq.ok, seqOr(rq)}, {rb.ok, seqOr(rb)}, {dx.ok, seqOr(dx)}} {
			if c.ok && c.seq <= s {
				s, any = c.seq, true
			}
		}
		if !any {
			return p, nil
		}
		var says Says
		var destTx []byte
		if pk.at(s) {
			r := pk.cur
			says.Ledger = LedgerSays{Seen: true, Receipt: r.receipt, Anchored: r.anchored, Confirmed: r.confirmed}
			if r.hasDestTx {
				says.Ledger.DestTx = destTxPending
			}
			if err := pk.advance(); err != nil {
				return p, fmt.Errorf("ledger packets: %w", err)
			}
		}
		if ex.at(s) {
			says.Ledger.Exception = ex.cur.state
			if err := ex.advance(); err != nil {
				return p, fmt.Errorf("ledger exceptions: %w", err)
			}
		}
		if rq.at(s) {
			says.Source.Requested = true
			if err := rq.advance(); err != nil {
				return p, fmt.Errorf("source requests: %w", err)
			}
		}
		if rb.at(s) {
			says.Source.RolledBack, says.Source.Reason = true, rb.cur.Reason
			if err := rb.advance(); err != nil {
				return p, fmt.Errorf("source rollbacks: %w", err)
			}
		}
		if dx.at(s) {
			e := dx.cur
			says.Dest = DestSays{Status: statusName(e.Status), Height: e.Height, Count: e.Count}
			destTx = e.TxHash // its hex only for a difference: most packets have none
			if err := dx.advance(); err != nil {
				return p, fmt.Errorf("destination executions: %w", err)
			}
		}
		tally(&p, &says)
		kinds := Compare(says)
		if len(kinds) == 0 {
			continue
		}
		id := amdp.PacketID(p.Pipe, s) // the ledger's packet_id is its hex
		packetID := hex.EncodeToString(id[:])
		if destTx != nil {
			says.Dest.Tx = hex.EncodeToString(destTx)
		}
		for _, k := range kinds {
			p.Differences++
			report(Difference{Kind: k, Pipe: p.Pipe, Seq: s, PacketID: packetID, Says: says})
		}
	}
}

func seqOr[T any](c *cursor[T]) uint64 {
	if !c.ok {
		return 0
	}
	return c.seq(c.cur)
}

func tally(p *PipeCounts, s *Says) {
	if s.Ledger.Seen {
		p.Packets++
	}
	if s.Source.Requested {
		p.Requests++
	}
	if s.Source.RolledBack {
		p.RolledBack++
	}
	if s.Dest.Status == statusDelivered {
		p.Deliveries++
	}
	if s.Ledger.Receipt != "" {
		p.Receipts++
	}
	if s.Ledger.Anchored {
		p.Anchored++
	}
	if s.Ledger.confirmed() {
		p.Confirmed++
	}
}
