package govchain

import (
	"bytes"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
)

func root(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func (c *chain) ledgerState(pipe string, seq uint64) PacketState {
	c.t.Helper()
	st := &PacketStatus{Pipe: pipe, Seq: seq}
	ex := &TxException{}
	if c.get(KeyException(pipe, seq), ex) {
		st.Exception = ex
	}
	var found []byte
	c.app.committed.IterateRange(KeyLedger(pipe, 0), KeyLedger(pipe, seq+1), false, func(k, v []byte) bool { found = k; return true })
	if found != nil {
		e := &LedgerEntry{}
		c.get(found, e)
		if seq >= e.First && seq <= e.Last {
			st.Ledger = e
		}
	}
	return DeriveState(st)
}

func TestTransactionControl(t *testing.T) {
	c := newMemChain(t)
	c.consortium()
	ga, gb := gov("org-a"), gov("org-b")
	ccA, ccB := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-b")
	c.ok(ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b"})
	c.ok(gb, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"})
	open := func(seq uint64, ranges ...*PipeRange) *MsgOpenBatches {
		var n uint32
		for _, r := range ranges {
			n += uint32(r.Last - r.First + 1)
		}
		return &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-b", BatchSeq: seq, MerkleRoot: root(byte(seq)), Count: n, Ranges: ranges}}}
	}

	if st := c.ledgerState("p1", 1); st != PacketState_PACKET_STATE_UNSPECIFIED {
		t.Fatalf("unanchored packet: %v", st)
	}
	c.ok(ccA, open(1, &PipeRange{Pipe: "p1", First: 1, Last: 3}))
	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    *MsgOpenBatches
		code uint32
		want string
	}{
		{"gap", ccA, open(2, &PipeRange{Pipe: "p1", First: 5, Last: 6}), CodeBadState, "leaves a gap"},
		{"duplicate", ccA, open(1, &PipeRange{Pipe: "p1", First: 4, Last: 4}), CodeExists, "already anchored"},
		{"other relay's account", ccB, open(2, &PipeRange{Pipe: "p1", First: 4, Last: 4}), CodeUnauthorized, "not relay relay-org-a's account"},
		{"governor", ga, open(2, &PipeRange{Pipe: "p1", First: 4, Last: 4}), CodeUnauthorized, "role governor"},
		{"unknown pipe", ccA, open(2, &PipeRange{Pipe: "nope", First: 1, Last: 1}), CodeNotFound, "does not exist"},
		{"count mismatch", ccA, &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-b", BatchSeq: 2, MerkleRoot: root(2), Count: 5, Ranges: []*PipeRange{{Pipe: "p1", First: 4, Last: 4}}}}}, CodeInvalid, "cover 1 packets"},
		{"bad root", ccA, &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-b", BatchSeq: 2, MerkleRoot: []byte{1}, Count: 1, Ranges: []*PipeRange{{Pipe: "p1", First: 4, Last: 4}}}}}, CodeInvalid, "merkle root"},
		{"wrong destination", ccA, &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-x", BatchSeq: 2, MerkleRoot: root(2), Count: 1, Ranges: []*PipeRange{{Pipe: "p1", First: 4, Last: 4}}}}}, CodeInvalid, "goes from relay"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}
	// A re-sent batch (after a crash) overlapping the ledger only adds what is new.
	c.ok(ccA, open(3, &PipeRange{Pipe: "p1", First: 2, Last: 4}))
	e := &LedgerEntry{}
	if !c.get(KeyLedger("p1", 4), e) || e.BatchSeq != 3 || e.Offset != 2 {
		t.Fatalf("ledger entry for the new part of a re-sent batch: %v", e)
	}
	if c.get(KeyLedger("p1", 2), &LedgerEntry{}) {
		t.Fatal("re-sent range written twice")
	}
	if st := c.ledgerState("p1", 2); st != PacketState_PACKET_OPEN {
		t.Fatalf("anchored packet: %v", st)
	}

	receipts := func(seq uint64, st ...byte) *MsgAnchorReceipts {
		return &MsgAnchorReceipts{Batches: []*BatchReceipts{{FromRelay: "relay-org-a", BatchSeq: seq, ReceiptRoot: root(9), Statuses: st}}}
	}
	c.rejected(ccA, receipts(1, 1, 1, 2), CodeUnauthorized, "not relay relay-org-b's account")
	c.rejected(ccB, receipts(1, 1, 1), CodeInvalid, "2 statuses for 3")
	c.rejected(ccB, receipts(1, 1, 9, 1), CodeInvalid, "not a receipt status")
	c.rejected(ccB, receipts(7, 1), CodeNotFound, "has not anchored")
	c.rejected(ccA, &MsgConfirmBatches{Batches: []*BatchRef{{FromRelay: "relay-org-a", BatchSeq: 1}}}, CodeBadState, "not anchored yet")
	c.ok(ccB, receipts(1, 1, 1, 2))
	c.rejected(ccB, receipts(1, 1, 1, 2), CodeExists, "already anchored")
	// Batch 3 re-sent 2..4: its receipts settle 4 and leave 2, 3 as batch 1 said.
	c.ok(ccB, receipts(3, 1, 1, 1))
	c.ok(ccA, &MsgConfirmBatches{Batches: []*BatchRef{{FromRelay: "relay-org-a", BatchSeq: 1}}})
	for seq, want := range map[uint64]PacketState{1: PacketState_PACKET_CONFIRMED, 2: PacketState_PACKET_CONFIRMED,
		3: PacketState_PACKET_FAILED, 4: PacketState_PACKET_DELIVERED} {
		if st := c.ledgerState("p1", seq); st != want {
			t.Errorf("seq %d: %v, want %v", seq, st, want)
		}
	}

	// Off the happy path: a refused packet is rolled back; another goes to a person.
	exc := func(state PacketState, seqs ...uint64) *MsgTxException {
		m := &MsgTxException{State: state, Reason: "test"}
		for _, s := range seqs {
			m.Packets = append(m.Packets, &PacketRef{Pipe: "p1", Seq: s})
		}
		return m
	}
	c.ok(ccA, exc(PacketState_PACKET_FAILED, 3))
	// Recorded again (a relay restarted between its record and its note
	// of it): accepted, nothing added, and the tx's other packets move.
	c.ok(ccA, exc(PacketState_PACKET_FAILED, 3, 6))
	ex3 := &TxException{}
	c.get(KeyException("p1", 3), ex3)
	if ex3.State != PacketState_PACKET_FAILED || len(ex3.History) != 1 {
		t.Fatalf("FAILED recorded twice: %v, want one history entry", ex3)
	}
	if st := c.ledgerState("p1", 6); st != PacketState_PACKET_FAILED {
		t.Fatalf("seq 6 beside a repeated record: %v, want FAILED", st)
	}
	c.ok(ccA, exc(PacketState_PACKET_ROLLED_BACK, 3))
	c.ok(ccA, exc(PacketState_PACKET_ROLLED_BACK, 3))
	c.rejected(ccA, exc(PacketState_PACKET_RETRYING, 3), CodeBadState, "cannot go from rolled_back to retrying")
	c.rejected(ccA, exc(PacketState_PACKET_RESOLVED, 3), CodeInvalid, "not a transition")
	c.ok(ccB, exc(PacketState_PACKET_FAILED, 5)) // the destination relay may report too
	c.ok(ccA, exc(PacketState_PACKET_RETRYING, 5))
	c.ok(ccA, exc(PacketState_PACKET_RETRYING, 5))
	c.ok(ccA, exc(PacketState_PACKET_MANUAL, 5))
	ex := &TxException{}
	c.get(KeyException("p1", 5), ex)
	if ex.Attempts != 2 || len(ex.History) != 4 || ex.State != PacketState_PACKET_MANUAL {
		t.Fatalf("exception record: %v", ex)
	}
	res := &MsgResolve{Packets: []*PacketRef{{Pipe: "p1", Seq: 5}}, Action: "retry", Note: "destination back"}
	c.rejected(ccA, exc(PacketState_PACKET_RETRYING, 5), CodeBadState, "cannot go from manual")
	c.rejected(gb, &MsgResolve{Packets: res.Packets, Action: "ignore"}, CodeInvalid, "action must be")
	c.rejected(gb, &MsgResolve{Packets: []*PacketRef{{Pipe: "p1", Seq: 3}}, Action: "retry"}, CodeBadState, "only packets in manual")
	c.rejected(crypto.DevSigner("stranger"), res, CodeUnknownSender, "not on chain")
	c.ok(gb, res)
	c.get(KeyException("p1", 5), ex)
	if ex.State != PacketState_PACKET_RESOLVED || ex.Resolution != "retry" {
		t.Fatalf("resolved: %v", ex)
	}
	c.ok(ccA, exc(PacketState_PACKET_RETRYING, 5))
	c.ok(ccA, exc(PacketState_PACKET_DELIVERED, 5))
	if st := c.ledgerState("p1", 5); st != PacketState_PACKET_DELIVERED {
		t.Fatalf("after the retry: %v", st)
	}
	// The resent packet's batch is confirmed: its exception record reads
	// CONFIRMED; a packet in MANUAL in the same batch stays there; the
	// compensator's late DELIVERED record changes nothing.
	c.ok(ccA, exc(PacketState_PACKET_FAILED, 6))
	c.ok(ccA, exc(PacketState_PACKET_MANUAL, 6))
	c.ok(ccA, open(4, &PipeRange{Pipe: "p1", First: 5, Last: 6}))
	c.ok(ccB, receipts(4, 1, 1))
	c.ok(ccA, &MsgConfirmBatches{Batches: []*BatchRef{{FromRelay: "relay-org-a", BatchSeq: 4}}})
	c.ok(ccA, exc(PacketState_PACKET_DELIVERED, 5))
	for seq, want := range map[uint64]PacketState{5: PacketState_PACKET_CONFIRMED, 6: PacketState_PACKET_MANUAL} {
		if st := c.ledgerState("p1", seq); st != want {
			t.Errorf("after the confirmation, seq %d: %v, want %v", seq, st, want)
		}
	}
	c.rejected(ccB, exc(PacketState_PACKET_FAILED, 0), CodeInvalid, "sequence 0")

	// The consistency mode changes by vote.
	id := proposalID(t, c.ok(ga, &MsgProposePipeMode{Pipe: "p1", Mode: ConsistencyMode_MODE_STRICT}))
	c.rejected(ga, &MsgProposePipeMode{Pipe: "p1", Mode: ConsistencyMode_MODE_OPTIMISTIC}, CodeBadState, "already optimistic")
	c.passVote(id)
	p := &Pipe{}
	c.get(KeyPipe("p1"), p)
	if p.Mode != ConsistencyMode_MODE_STRICT {
		t.Fatalf("mode after the vote: %v", p.Mode)
	}
}
