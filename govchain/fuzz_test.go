package govchain

import (
	"strings"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
)

// FuzzDecodeTx feeds arbitrary bytes to the tx decoder: it must never panic,
// must refuse anything over the size limit, and anything it accepts must
// carry a signature that verifies.
func FuzzDecodeTx(f *testing.F) {
	// A small size limit, so that a seed can sit at it without being so
	// long that minimizing its mutants takes the run.
	const maxBytes = 256
	s := crypto.DevSigner("fuzz")
	var valid [][]byte
	for _, m := range []*TxBody{
		Wrap(&MsgApplyOrg{Id: "org-x", Name: "X"}),
		Wrap(&MsgVote{ProposalId: 1, Approve: true}),
		Wrap(&MsgApplyPipe{Id: "p", SourceContract: "c", DestinationOrg: "o", DestinationSubchain: "s", Limits: &PipeLimits{MaxPayload: 10}}),
		{},
		{Account: make([]byte, 20), Msg: &TxBody_RotateKey{RotateKey: &MsgRotateKey{NewSuite: "ed25519", NewPublicKey: s.PublicKey(), NewSignature: []byte{1}}}},
		{Account: []byte{1, 2, 3}, Msg: &TxBody_RevokeAccount{RevokeAccount: &MsgRevokeAccount{Account: []byte{1}}}},
	} {
		raw, err := NewTx(s, "fuzz-chain", 1, m)
		if err != nil {
			f.Fatal(err)
		}
		valid = append(valid, raw)
	}
	// The longest tx within maxBytes and the shortest over it.
	var atLimit, overLimit []byte
	for n := 0; overLimit == nil; n++ {
		raw, err := NewTx(s, "fuzz-chain", 2, Wrap(&MsgSuspendPipe{Id: "p", Reason: strings.Repeat("r", n)}))
		if err != nil {
			f.Fatal(err)
		}
		if len(raw) <= maxBytes {
			atLimit = raw
		} else {
			overLimit = raw
		}
	}
	valid = append(valid, atLimit, overLimit)
	other, _ := NewTx(s, "other-chain", 1, Wrap(&MsgVote{ProposalId: 1}))
	zero, _ := NewTx(s, "fuzz-chain", 0, Wrap(&MsgVote{ProposalId: 1}))
	for _, seed := range append(valid,
		other, zero, valid[0][:len(valid[0])-1], valid[1][:10],
		[]byte{}, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, []byte{0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00},
	) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tx, rej := DecodeTx(raw, "fuzz-chain", maxBytes)
		if (tx == nil) == (rej == nil) {
			t.Fatalf("exactly one of tx and rejection must be set: %v %v", tx, rej)
		}
		if rej != nil {
			if rej.Code == CodeOK || rej.Msg == "" {
				t.Fatalf("rejection without code or reason: %+v", rej)
			}
			return
		}
		if len(raw) > maxBytes {
			t.Fatal("accepted a tx over the limit")
		}
		if tx.Body.Msg == nil || tx.Body.Nonce == 0 {
			t.Fatal("accepted a tx without message or nonce")
		}
		if len(tx.Body.Account) != 0 && string(tx.Sender[:]) != string(tx.Body.Account) {
			t.Fatal("a tx that names its account must act for it")
		}
	})
}

// FuzzDecodeChanges feeds arbitrary bytes to the change-log decoder: it
// must never panic, and what it accepts must encode back to the same bytes
// when the keys were sorted.
func FuzzDecodeChanges(f *testing.F) {
	f.Add(encodeChanges(7, []string{"a/x", "o/org-1", "i/p"}))
	f.Add(encodeChanges(1, nil))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, keys, err := decodeChanges(b)
		if err != nil {
			return
		}
		ks := make([]string, len(keys))
		sorted := true
		for i, k := range keys {
			ks[i] = string(k)
			if i > 0 && ks[i] < ks[i-1] {
				sorted = false
			}
		}
		if sorted && string(encodeChanges(h, ks)) != string(b) {
			t.Fatalf("round trip of %x differs", b)
		}
	})
}
