package govchain

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Bounds of the transaction-control messages.
const (
	maxBatchesPerTx   = 1024
	maxPacketsPerTx   = 65536
	maxBatchCount     = 65536
	maxHistory        = 32
	StatusConfirmed   = 0x80 // ledger status bit: the verifier confirmed it
	statusDelivered   = byte(amdp.StatusDelivered)
	statusTimedOut    = byte(amdp.StatusTimedOut) // the highest receipt status
	resolveRetry      = "retry"
	resolveRollback   = "rollback"
	resolveAccept     = "accept"
	maxExceptionNotes = 256
)

// relayAccount checks that the sender is the account that relayID's
// service registers (and an active cross-chain account).
func (x *execCtx) relayAccount(action, relayID string) (*TxError, error) {
	if _, r, err := x.requireRole(action, Role_ROLE_CROSSCHAIN); r != nil || err != nil {
		return r, err
	}
	svc := &Service{}
	found, err := load(x.st, KeyService(relayID), svc)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "%s: relay %s is not registered", action, relayID), nil
	}
	if !bytes.Equal(svc.Account, x.senderAddr[:]) {
		return reject(CodeUnauthorized, "%s: account %s is not relay %s's account", action, x.senderAddr, relayID), nil
	}
	return nil, nil
}

func (x *execCtx) proposePipeMode(m *MsgProposePipeMode) (*TxError, error) {
	p, r, err := x.pipeFor("propose-pipe-mode", m.Pipe)
	if r != nil || err != nil {
		return r, err
	}
	if r, err := x.pipeParty("propose-pipe-mode", p); r != nil || err != nil {
		return r, err
	}
	if m.Mode != ConsistencyMode_MODE_OPTIMISTIC && m.Mode != ConsistencyMode_MODE_STRICT {
		return reject(CodeInvalid, "propose-pipe-mode %s: mode must be strict or optimistic", p.Id), nil
	}
	if m.Mode == p.Mode {
		return reject(CodeBadState, "pipe %s: is already %s", p.Id, short(p.Mode.String())), nil
	}
	if r, err := x.propose(ProposalKind_PROPOSAL_PIPE_MODE, p.Id, x.sender.Org); r != nil || err != nil {
		return r, err
	}
	// propose stored the proposal; record the mode it would set.
	next, err := x.st.Get([]byte(keyNextProp))
	if err != nil {
		return nil, err
	}
	id := beUint64(next) - 1
	prop := &Proposal{}
	if _, err := load(x.st, KeyProposal(id), prop); err != nil {
		return nil, err
	}
	prop.Mode = m.Mode
	return nil, x.st.put(KeyProposal(id), prop)
}

// EnumName renders a generated enum value for people: the type prefix
// dropped and lower case (PIPE_ACTIVE -> "active", MODE_STRICT -> "strict").
func EnumName(enum string) string {
	if i := strings.IndexByte(enum, '_'); i >= 0 {
		enum = enum[i+1:]
	}
	return strings.ToLower(enum)
}

func short(enum string) string { return EnumName(enum) }

func (x *execCtx) through(pipe string) (uint64, error) {
	b, err := x.st.Get(KeyThrough(pipe))
	if err != nil || len(b) != 8 {
		return 0, err
	}
	return beUint64(b), nil
}

// openBatches anchors the source relay's batches: one record per batch and
// one ledger entry per newly anchored pipe range. A range that a re-sent
// batch covers again (after a crash) adds no ledger entry; a range that
// skips sequences is refused.
func (x *execCtx) openBatches(m *MsgOpenBatches) (*TxError, error) {
	if len(m.Batches) == 0 || len(m.Batches) > maxBatchesPerTx {
		return reject(CodeInvalid, "open-batches: 1-%d batches per tx", maxBatchesPerTx), nil
	}
	total := 0
	for _, b := range m.Batches {
		action := fmt.Sprintf("open-batches %s/%d", b.FromRelay, b.BatchSeq)
		if r, err := x.relayAccount(action, b.FromRelay); r != nil || err != nil {
			return r, err
		}
		total += int(b.Count)
		switch {
		case len(b.MerkleRoot) != 32:
			return reject(CodeInvalid, "%s: merkle root must be 32 bytes", action), nil
		case b.Count == 0 || b.Count > maxBatchCount || total > maxPacketsPerTx:
			return reject(CodeInvalid, "%s: count must be 1-%d (and %d per tx)", action, maxBatchCount, maxPacketsPerTx), nil
		case len(b.Ranges) == 0 || len(b.Ranges) > int(b.Count):
			return reject(CodeInvalid, "%s: 1-%d pipe ranges", action, b.Count), nil
		}
		if found, err := load(x.st, KeyBatch(b.FromRelay, b.BatchSeq), &BatchAnchor{}); err != nil || found {
			if err != nil {
				return nil, err
			}
			return reject(CodeExists, "%s: batch already anchored", action), nil
		}
		var covered uint64
		for _, rg := range b.Ranges {
			if rg.First == 0 || rg.Last < rg.First || uint64(rg.Offset)+rg.Last-rg.First+1 > uint64(b.Count) {
				return reject(CodeInvalid, "%s: pipe %s range %d-%d at offset %d does not fit the batch", action, rg.Pipe, rg.First, rg.Last, rg.Offset), nil
			}
			covered += rg.Last - rg.First + 1
			p, r, err := x.pipeFor(action, rg.Pipe)
			if r != nil || err != nil {
				return r, err
			}
			if p.Source.GetRelayId() != b.FromRelay || p.Destination.GetRelayId() != b.ToRelay {
				return reject(CodeInvalid, "%s: pipe %s goes from relay %s to %s", action, p.Id, p.Source.GetRelayId(), p.Destination.GetRelayId()), nil
			}
			if p.Status == PipeStatus_PIPE_PROPOSED {
				return reject(CodeBadState, "pipe %s: destination org %s has not authorized it", p.Id, p.Destination.Org), nil
			}
			through, err := x.through(rg.Pipe)
			if err != nil {
				return nil, err
			}
			if rg.First > through+1 {
				// Bad state, not invalid: the pipe's ledger has not reached
				// this range yet. The earlier range is usually on its way
				// (in a tx that failed and is retried, or in a later
				// block), so the sender retries this one after it.
				return reject(CodeBadState, "%s: pipe %s is anchored through %d; a range starting at %d leaves a gap", action, rg.Pipe, through, rg.First), nil
			}
			if rg.Last <= through {
				continue // a re-sent range: already in the ledger
			}
			start := max(rg.First, through+1)
			e := &LedgerEntry{Pipe: rg.Pipe, First: start, Last: rg.Last, Offset: rg.Offset + uint32(start-rg.First),
				FromRelay: b.FromRelay, BatchSeq: b.BatchSeq, Statuses: make([]byte, rg.Last-start+1)}
			if err := x.st.put(KeyLedger(rg.Pipe, start), e); err != nil {
				return nil, err
			}
			x.st.set(KeyThrough(rg.Pipe), be64(rg.Last))
		}
		if covered != uint64(b.Count) {
			return reject(CodeInvalid, "%s: ranges cover %d packets, the batch holds %d", action, covered, b.Count), nil
		}
		a := &BatchAnchor{FromRelay: b.FromRelay, ToRelay: b.ToRelay, BatchSeq: b.BatchSeq, MerkleRoot: b.MerkleRoot,
			Count: b.Count, Ranges: b.Ranges, OpenedHeight: x.height}
		if err := x.st.put(KeyBatch(b.FromRelay, b.BatchSeq), a); err != nil {
			return nil, err
		}
	}
	x.emit("anchor", "kind", "open", "batches", fmt.Sprint(len(m.Batches)), "packets", fmt.Sprint(total))
	return nil, nil
}

// ledgerIter calls fn for every ledger entry of pipe overlapping
// [first, last], newest first. Entries never overlap, so walking down from
// last stops at the first entry that ends before first.
func (x *execCtx) ledgerIter(pipe string, first, last uint64, fn func(key []byte, e *LedgerEntry) error) error {
	it, err := x.base.Iterator(KeyLedger(pipe, 0), KeyLedger(pipe, last+1), false)
	if err != nil {
		return err
	}
	var keys [][]byte
	for ; it.Valid(); it.Next() {
		e := &LedgerEntry{}
		// Read through the overlay: an earlier batch of this tx may have
		// updated the entry.
		if _, err := load(x.st, it.Key(), e); err != nil {
			it.Close()
			return err
		}
		if e.Last < first {
			break
		}
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for _, k := range keys {
		e := &LedgerEntry{}
		if _, err := load(x.st, k, e); err != nil {
			return err
		}
		if err := fn(k, e); err != nil {
			return err
		}
	}
	return nil
}

// markLedger applies f to the status byte of every anchored sequence that
// batch a covers, reading the batch's status at the packet's index.
func (x *execCtx) markLedger(a *BatchAnchor, f func(cur, batchStatus byte) byte) error {
	for _, rg := range a.Ranges {
		err := x.ledgerIter(rg.Pipe, rg.First, rg.Last, func(k []byte, e *LedgerEntry) error {
			for seq := max(e.First, rg.First); seq <= min(e.Last, rg.Last); seq++ {
				idx := uint64(rg.Offset) + seq - rg.First
				e.Statuses[seq-e.First] = f(e.Statuses[seq-e.First], a.Statuses[idx])
			}
			return x.st.put(k, e)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *execCtx) anchorReceipts(m *MsgAnchorReceipts) (*TxError, error) {
	if len(m.Batches) == 0 || len(m.Batches) > maxBatchesPerTx {
		return reject(CodeInvalid, "anchor-receipts: 1-%d batches per tx", maxBatchesPerTx), nil
	}
	for _, b := range m.Batches {
		action := fmt.Sprintf("anchor-receipts %s/%d", b.FromRelay, b.BatchSeq)
		a := &BatchAnchor{}
		found, err := load(x.st, KeyBatch(b.FromRelay, b.BatchSeq), a)
		if err != nil {
			return nil, err
		}
		if !found {
			return reject(CodeNotFound, "%s: the source relay has not anchored this batch", action), nil
		}
		if r, err := x.relayAccount(action, a.ToRelay); r != nil || err != nil {
			return r, err
		}
		switch {
		case a.ReceiptedHeight != 0:
			return reject(CodeExists, "%s: receipts already anchored", action), nil
		case len(b.ReceiptRoot) != 32:
			return reject(CodeInvalid, "%s: receipt root must be 32 bytes", action), nil
		case len(b.Statuses) != int(a.Count):
			return reject(CodeInvalid, "%s: %d statuses for %d packets", action, len(b.Statuses), a.Count), nil
		}
		for i, st := range b.Statuses {
			if st < statusDelivered || st > statusTimedOut {
				return reject(CodeInvalid, "%s: status %d of packet %d is not a receipt status", action, st, i), nil
			}
		}
		a.ReceiptRoot, a.Statuses, a.ReceiptedHeight = b.ReceiptRoot, b.Statuses, x.height
		if err := x.st.put(KeyBatch(a.FromRelay, a.BatchSeq), a); err != nil {
			return nil, err
		}
		// The first receipt of a packet wins: a re-sent batch returns the
		// same receipts, and an exception record governs after that.
		if err := x.markLedger(a, func(cur, st byte) byte {
			if cur != 0 {
				return cur
			}
			return st
		}); err != nil {
			return nil, err
		}
	}
	x.emit("anchor", "kind", "receipts", "batches", fmt.Sprint(len(m.Batches)))
	return nil, nil
}

func (x *execCtx) confirmBatches(m *MsgConfirmBatches) (*TxError, error) {
	if len(m.Batches) == 0 || len(m.Batches) > maxBatchesPerTx {
		return reject(CodeInvalid, "confirm-batches: 1-%d batches per tx", maxBatchesPerTx), nil
	}
	for _, b := range m.Batches {
		action := fmt.Sprintf("confirm-batches %s/%d", b.FromRelay, b.BatchSeq)
		if r, err := x.relayAccount(action, b.FromRelay); r != nil || err != nil {
			return r, err
		}
		a := &BatchAnchor{}
		found, err := load(x.st, KeyBatch(b.FromRelay, b.BatchSeq), a)
		if err != nil {
			return nil, err
		}
		switch {
		case !found:
			return reject(CodeNotFound, "%s: no such batch anchor", action), nil
		case a.ReceiptedHeight == 0:
			return reject(CodeBadState, "%s: its receipts are not anchored yet", action), nil
		case a.ConfirmedHeight != 0:
			return reject(CodeExists, "%s: already confirmed", action), nil
		}
		a.ConfirmedHeight = x.height
		if err := x.st.put(KeyBatch(a.FromRelay, a.BatchSeq), a); err != nil {
			return nil, err
		}
		if err := x.markLedger(a, func(cur, st byte) byte {
			if cur&0x7f == statusDelivered {
				return cur | StatusConfirmed
			}
			return cur
		}); err != nil {
			return nil, err
		}
		if err := x.confirmExceptions(a); err != nil {
			return nil, err
		}
	}
	x.emit("anchor", "kind", "confirm", "batches", fmt.Sprint(len(m.Batches)))
	return nil, nil
}

// confirmExceptions carries a confirmation to the exception records it
// settles. A packet resent after an exception (RETRYING, RESOLVED by a
// person's retry, or DELIVERED on retry) and receipted delivered in the
// confirmed batch a is CONFIRMED: its exception record governs its state
// (DeriveState), and the ledger's confirmed bit may belong to another
// batch or be absent (the first receipt wins there). Other exception
// states are left alone: MANUAL is left only by Resolve, and a rollback
// or a person's accept is final. One range scan per pipe range: batches
// without exceptions cost one empty iterator.
func (x *execCtx) confirmExceptions(a *BatchAnchor) error {
	for _, rg := range a.Ranges {
		it, err := x.base.Iterator(KeyException(rg.Pipe, rg.First), KeyException(rg.Pipe, rg.Last+1), true)
		if err != nil {
			return err
		}
		var keys [][]byte
		for ; it.Valid(); it.Next() {
			keys = append(keys, append([]byte(nil), it.Key()...))
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		for _, k := range keys {
			ex := &TxException{}
			if _, err := load(x.st, k, ex); err != nil {
				return err
			}
			if ex.Seq < rg.First || ex.Seq > rg.Last || a.Statuses[uint64(rg.Offset)+ex.Seq-rg.First]&0x7f != statusDelivered {
				continue
			}
			switch {
			case ex.State == PacketState_PACKET_RETRYING, ex.State == PacketState_PACKET_DELIVERED,
				ex.State == PacketState_PACKET_RESOLVED && ex.Resolution == resolveRetry:
			default:
				continue
			}
			ex.State, ex.Reason = PacketState_PACKET_CONFIRMED, fmt.Sprintf("confirmed in batch %s/%d", a.FromRelay, a.BatchSeq)
			x.stamp(ex)
			if err := x.st.put(k, ex); err != nil {
				return err
			}
		}
	}
	return nil
}

// ExceptionMove reports whether a packet may go from one exception state
// to another (none = no record yet). MANUAL is left only by Resolve.
func ExceptionMove(from, to PacketState) bool {
	switch from {
	case PacketState_PACKET_STATE_UNSPECIFIED:
		return to == PacketState_PACKET_FAILED || to == PacketState_PACKET_MANUAL
	case PacketState_PACKET_FAILED:
		// DELIVERED: a packet whose delivery failed at its relay is found
		// executed on the destination chain (its timeout's evidence).
		return to == PacketState_PACKET_RETRYING || to == PacketState_PACKET_ROLLED_BACK || to == PacketState_PACKET_MANUAL ||
			to == PacketState_PACKET_DELIVERED
	case PacketState_PACKET_RETRYING:
		return to == PacketState_PACKET_RETRYING || to == PacketState_PACKET_DELIVERED || to == PacketState_PACKET_ROLLED_BACK ||
			to == PacketState_PACKET_MANUAL || to == PacketState_PACKET_FAILED
	case PacketState_PACKET_RESOLVED:
		return to == PacketState_PACKET_RETRYING || to == PacketState_PACKET_DELIVERED || to == PacketState_PACKET_ROLLED_BACK
	case PacketState_PACKET_DELIVERED:
		return to == PacketState_PACKET_CONFIRMED || to == PacketState_PACKET_FAILED
	}
	return false
}

// packetParty checks that the sender may record a transition for pipe p: a
// relay at either end, or an operator or governor of either org.
func (x *execCtx) packetParty(action string, p *Pipe) (*TxError, error) {
	if x.sender.Role == Role_ROLE_CROSSCHAIN {
		for _, relay := range []string{p.Source.GetRelayId(), p.Destination.GetRelayId()} {
			svc := &Service{}
			if found, err := load(x.st, KeyService(relay), svc); err != nil {
				return nil, err
			} else if found && bytes.Equal(svc.Account, x.senderAddr[:]) {
				return nil, nil
			}
		}
		return reject(CodeUnauthorized, "%s: account %s is neither relay of pipe %s", action, x.senderAddr, p.Id), nil
	}
	return x.pipeParty(action, p)
}

func (x *execCtx) txException(m *MsgTxException) (*TxError, error) {
	if len(m.Packets) == 0 || len(m.Packets) > maxPacketsPerTx {
		return reject(CodeInvalid, "tx-exception: 1-%d packets per tx", maxPacketsPerTx), nil
	}
	if len(m.Reason) > maxExceptionNotes {
		return reject(CodeInvalid, "tx-exception: reason over %d bytes", maxExceptionNotes), nil
	}
	if m.State == PacketState_PACKET_RESOLVED || m.State == PacketState_PACKET_OPEN || m.State == PacketState_PACKET_STATE_UNSPECIFIED {
		return reject(CodeInvalid, "tx-exception: state %s is not a transition a relay records", short(m.State.String())), nil
	}
	return x.transition(m.Packets, "tx-exception", func(p *Pipe, ex *TxException) *TxError {
		if ex.State == PacketState_PACKET_CONFIRMED && m.State == PacketState_PACKET_DELIVERED {
			// The confirmation of the resent batch committed before the
			// compensator's record of its delivery: nothing to add.
			return nil
		}
		if ex.State == m.State && m.State != PacketState_PACKET_RETRYING {
			// Recorded again: a relay killed between its record and its
			// own note of it records once more after the restart (at
			// least once, so that nothing goes unrecorded). Nothing to
			// add; refusing it would refuse the whole tx, and with it
			// the other packets' real moves.
			return nil
		}
		if !ExceptionMove(ex.State, m.State) {
			return reject(CodeBadState, "pipe %s seq %d: cannot go from %s to %s", p.Id, ex.Seq, stateName(ex.State), stateName(m.State))
		}
		if m.State == PacketState_PACKET_RETRYING {
			ex.Attempts++
		}
		ex.State, ex.Reason = m.State, m.Reason
		return nil
	}, x.packetParty)
}

func stateName(s PacketState) string {
	if s == PacketState_PACKET_STATE_UNSPECIFIED {
		return "none"
	}
	return short(s.String())
}

func (x *execCtx) resolve(m *MsgResolve) (*TxError, error) {
	if len(m.Packets) == 0 || len(m.Packets) > maxPacketsPerTx {
		return reject(CodeInvalid, "resolve: 1-%d packets per tx", maxPacketsPerTx), nil
	}
	switch m.Action {
	case resolveRetry, resolveRollback, resolveAccept:
	default:
		return reject(CodeInvalid, "resolve: action must be retry, rollback or accept, not %q", m.Action), nil
	}
	if len(m.Note) > maxExceptionNotes {
		return reject(CodeInvalid, "resolve: note over %d bytes", maxExceptionNotes), nil
	}
	return x.transition(m.Packets, "resolve", func(p *Pipe, ex *TxException) *TxError {
		if ex.State != PacketState_PACKET_MANUAL {
			return reject(CodeBadState, "pipe %s seq %d: is %s; only packets in manual are resolved", p.Id, ex.Seq, stateName(ex.State))
		}
		ex.State, ex.Resolution, ex.Reason = PacketState_PACKET_RESOLVED, m.Action, m.Note
		return nil
	}, x.pipeParty)
}

// transition applies move to each packet's exception record, creating it
// if needed, after checking the sender against each pipe with authorize.
func (x *execCtx) transition(packets []*PacketRef, action string, move func(*Pipe, *TxException) *TxError,
	authorize func(string, *Pipe) (*TxError, error)) (*TxError, error) {
	pipes := map[string]*Pipe{}
	for _, ref := range packets {
		p, ok := pipes[ref.Pipe]
		if !ok {
			var r *TxError
			var err error
			if p, r, err = x.pipeFor(action, ref.Pipe); r != nil || err != nil {
				return r, err
			}
			if r, err := authorize(action, p); r != nil || err != nil {
				return r, err
			}
			pipes[ref.Pipe] = p
		}
		if ref.Seq == 0 {
			return reject(CodeInvalid, "%s: pipe %s: sequence 0 does not exist", action, ref.Pipe), nil
		}
		ex := &TxException{}
		found, err := load(x.st, KeyException(ref.Pipe, ref.Seq), ex)
		if err != nil {
			return nil, err
		}
		if !found {
			id := packetID(ref.Pipe, ref.Seq)
			ex = &TxException{Pipe: ref.Pipe, Seq: ref.Seq, PacketId: id[:]}
		}
		var before *TxException
		if found {
			before = proto.Clone(ex).(*TxException)
		}
		if r := move(p, ex); r != nil {
			return r, nil
		}
		if found && proto.Equal(before, ex) {
			continue // nothing moved: no new history entry
		}
		x.stamp(ex)
		if err := x.st.put(KeyException(ref.Pipe, ref.Seq), ex); err != nil {
			return nil, err
		}
	}
	x.emit("exception", "action", action, "packets", fmt.Sprint(len(packets)))
	return nil, nil
}

// stamp records ex's new state at this block, by the tx's sender, in its
// bounded history.
func (x *execCtx) stamp(ex *TxException) {
	ex.Height = x.height
	ex.History = append(ex.History, &Transition{State: ex.State, Reason: ex.Reason, Height: x.height, By: x.senderAddr[:]})
	if len(ex.History) > maxHistory {
		ex.History = ex.History[len(ex.History)-maxHistory:]
	}
}

func packetID(pipe string, seq uint64) [32]byte { return amdp.PacketID(pipe, seq) }
