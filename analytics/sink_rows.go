package analytics

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// Topics the sink reads. The events topics are a pattern: every relay
// writes its own (ccgp.events.<relay>) beside the shared ccgp.events, and
// a relay that joins later is picked up at the next metadata refresh.
const (
	ReceiptsTopic = "ccgp.receipts"
	eventsPattern = `^ccgp\.events(\..+)?$`
)

var eventsTopic = regexp.MustCompile(eventsPattern)

// PipeLookup is how the sink learns a pipe's endpoints (the org, relay and
// subchain columns of packets). *govchain.Client implements it with a
// proven read. Pipe returns an error wrapping govchain.ErrNoRecord when the
// chain proves the pipe absent (the packet's columns stay empty); any
// other error means the question could not be answered and the sink asks
// again, with backoff, rather than write a row that lacks them.
type PipeLookup interface {
	Pipe(ctx context.Context, id string) (*govchain.Pipe, error)
}

// The rows of each table, in the column order of its insert statement.

type packetRow struct {
	pipe, packetID                        string
	seq                                   uint64
	srcOrg, srcRelay, srcChain            string
	dstOrg, dstRelay, dstChain            string
	operation                             string
	payloadBytes                          uint32
	timeoutHeight, timeoutUnixMs, eventMs uint64
}

const packetInsert = "INSERT INTO %s.packets (pipe, seq, packet_id, src_org, src_relay, src_chain, dst_org, dst_relay, dst_chain, operation, payload_bytes, timeout_height, timeout_unix_ms, event_ms, version)"

// version of a packet's request row: its event time. A redelivered record
// carries the same timestamp, so it makes an identical row; a later stage
// of the packet (written by another writer) happens later and so wins.
func (r *packetRow) values() []any {
	return []any{r.pipe, r.seq, r.packetID, r.srcOrg, r.srcRelay, r.srcChain, r.dstOrg, r.dstRelay, r.dstChain,
		r.operation, r.payloadBytes, r.timeoutHeight, r.timeoutUnixMs, r.eventMs, r.eventMs}
}

type receiptRow struct {
	packetID, fromRelay, toRelay string
	batchSeq                     uint64
	status, destTx               string
	destHeight                   uint64
	reason                       string
	receiptedMs                  uint64
}

const receiptInsert = "INSERT INTO %s.receipts (packet_id, from_relay, to_relay, batch_seq, status, dest_tx, dest_height, reason, receipted_ms, version)"

// version: the receipt record's time, so the latest receipt of a packet
// wins and a redelivery is identical.
func (r *receiptRow) values() []any {
	return []any{r.packetID, r.fromRelay, r.toRelay, r.batchSeq, r.status, r.destTx, r.destHeight, r.reason, r.receiptedMs, r.receiptedMs}
}

// batchRow is the batches row a receipt batch tells of: the batch it
// acknowledges went from the receipt's to_relay (the source) to its
// from_relay (the destination that signed the receipts).
type batchRow struct {
	fromRelay, toRelay string
	batchSeq           uint64
	packets            uint32
	receiptedMs        uint64
}

const batchInsert = "INSERT INTO %s.batches (from_relay, to_relay, batch_seq, packets, receipted_ms, version)"

func (r *batchRow) values() []any {
	return []any{r.fromRelay, r.toRelay, r.batchSeq, r.packets, r.receiptedMs, r.receiptedMs}
}

type offenderRow offence.Record

const offenderInsert = "INSERT INTO %s.offenders (time_ms, reporter, stage, reason, org, relay, pipe, seq, packet_id, detail, proven, evidence, version)"

// version: the record's own detection time. Every column comes from the
// record, so a redelivery is identical.
func (r *offenderRow) values() []any {
	var proven uint8
	if r.Proven {
		proven = 1
	}
	ms := uint64(max(r.TimeUnixMs, 0))
	return []any{ms, r.Reporter, r.Stage, r.Reason, r.Org, r.Relay, r.Pipe, r.Seq, r.PacketID, r.Detail, proven, string(r.Evidence), ms}
}

// rows is what one flush inserts, and the records whose offsets it
// commits once every table has acknowledged its rows.
type rows struct {
	packets   []packetRow
	receipts  []receiptRow
	batches   []batchRow
	offenders []offenderRow
	// last is the newest record per partition, so committing them
	// commits everything this flush consumed, including the records that
	// made no row (undecodable ones, counted and skipped).
	last    map[topicPartition]*kgo.Record
	records int
	started time.Time // when the first record arrived: the flush is due a second later
}

type topicPartition struct {
	topic     string
	partition int32
}

func (b *rows) len() int { return len(b.packets) + len(b.receipts) + len(b.batches) + len(b.offenders) }

func (b *rows) reset() {
	b.packets, b.receipts, b.batches, b.offenders = b.packets[:0], b.receipts[:0], b.batches[:0], b.offenders[:0]
	clear(b.last)
	b.records = 0
	b.started = time.Time{}
}

// errBadRecord marks a record that cannot be decoded: it is counted and
// skipped, never retried.
var errBadRecord = errors.New("undecodable record")

// decoder turns records into rows. Its only I/O is the pipe lookup, whose
// answers it caches per pipe: the endpoints of a pipe do not change.
type decoder struct {
	pipes PipeLookup
	cache map[string]*govchain.Pipe // nil value: the chain proved it absent
	limit amdp.Limits
}

func newDecoder(p PipeLookup) *decoder {
	return &decoder{pipes: p, cache: map[string]*govchain.Pipe{}, limit: amdp.Limits{}.WithDefaults()}
}

// add appends the rows of r to b. An undecodable record is an error
// wrapping errBadRecord; any other error is the pipe lookup failing, and
// the caller retries the same record.
func (d *decoder) add(ctx context.Context, b *rows, r *kgo.Record) error {
	ms := uint64(max(r.Timestamp.UnixMilli(), 0))
	switch {
	case r.Topic == offence.Topic:
		rec, err := offence.Decode(r.Value)
		if err != nil {
			return fmt.Errorf("%w: %s/%d@%d: %w", errBadRecord, r.Topic, r.Partition, r.Offset, err)
		}
		b.offenders = append(b.offenders, offenderRow(rec))
	case r.Topic == ReceiptsTopic:
		rb, err := amdp.DecodeReceiptBatch(r.Value, d.limit)
		if err != nil {
			return fmt.Errorf("%w: %s/%d@%d: %w", errBadRecord, r.Topic, r.Partition, r.Offset, err)
		}
		h := rb.GetHeader()
		for _, rc := range rb.GetReceipts() {
			b.receipts = append(b.receipts, receiptRow{
				packetID: hex.EncodeToString(rc.GetPacketId()), fromRelay: h.GetFromRelay(), toRelay: h.GetToRelay(),
				batchSeq: h.GetBatchSeq(), status: strings.TrimPrefix(rc.GetStatus().String(), "RECEIPT_STATUS_"),
				destTx: hex.EncodeToString(rc.GetDestTxHash()), destHeight: rc.GetDestHeight(), reason: rc.GetReason(),
				receiptedMs: ms,
			})
		}
		b.batches = append(b.batches, batchRow{fromRelay: h.GetToRelay(), toRelay: h.GetFromRelay(), batchSeq: h.GetBatchSeq(),
			packets: uint32(len(rb.GetReceipts())), receiptedMs: ms})
	case eventsTopic.MatchString(r.Topic):
		p, err := amdp.DecodePacket(r.Value, d.limit)
		if err != nil {
			return fmt.Errorf("%w: %s/%d@%d: %w", errBadRecord, r.Topic, r.Partition, r.Offset, err)
		}
		pipe, err := d.pipe(ctx, p.GetPipeId())
		if err != nil {
			return err
		}
		id := p.ID()
		row := packetRow{pipe: p.GetPipeId(), seq: p.GetSequence(), packetID: hex.EncodeToString(id[:]),
			operation: strings.TrimPrefix(p.GetOperation().String(), "OPERATION_"), payloadBytes: uint32(len(p.GetPayload())),
			timeoutHeight: p.GetTimeoutHeight(), timeoutUnixMs: p.GetTimeoutUnixMs(), eventMs: ms}
		if pipe != nil {
			s, t := pipe.GetSource(), pipe.GetDestination()
			row.srcOrg, row.srcRelay, row.srcChain = s.GetOrg(), s.GetRelayId(), s.GetSubchain()
			row.dstOrg, row.dstRelay, row.dstChain = t.GetOrg(), t.GetRelayId(), t.GetSubchain()
		}
		b.packets = append(b.packets, row)
	default:
		// The regex subscription matches only our topics; a record from
		// elsewhere is a misconfiguration, not data.
		return fmt.Errorf("%w: %s is not a topic the sink reads", errBadRecord, r.Topic)
	}
	return nil
}

// pipe returns the pipe's record, nil when the chain proves it absent.
func (d *decoder) pipe(ctx context.Context, id string) (*govchain.Pipe, error) {
	if p, ok := d.cache[id]; ok {
		return p, nil
	}
	// Bounded: a node that stops answering is asked again (Sink.decode
	// retries), not waited on forever.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	p, err := d.pipes.Pipe(lctx, id)
	cancel()
	switch {
	case errors.Is(err, govchain.ErrNoRecord):
		p = nil
	case err != nil:
		return nil, fmt.Errorf("analytics: pipe %s from governance: %w", id, err)
	}
	// The cache is bounded by the pipes that exist (and, for absent
	// ones, by the ids sent to us); a flood of forged pipe ids is bounded
	// by resetting it.
	if len(d.cache) >= 1<<16 {
		clear(d.cache)
	}
	d.cache[id] = p
	return p, nil
}
