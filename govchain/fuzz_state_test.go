package govchain

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ccgpmesh/ccgp/crypto"
)

// FuzzGovTxs runs sequences of signed governance txs, derived from the fuzz
// input, through two fresh in-memory apps block by block: no handler may
// panic, the apps must agree on every tx result and on the app hash at
// every height, and CheckTx must reject a tx's envelope as FinalizeBlock
// does.
//
// The input is a list of txs, each a control byte, a kind byte and as many
// field bytes as the kind takes (a missing byte reads as zero):
//
//	control  bits 0-2 signer (fuzzSigners), bits 3-5 nonce and envelope
//	         (the nonce* modes), bit 6 the same tx twice, bit 7 end the block
//	kind     message kind (fuzzKinds), one past them a body without message
//
// Field bytes pick from small vocabularies of ids that the genesis and the
// other txs use, so that a few bytes build a consortium, a pipe and its
// anchors; seedScripts are such paths, for the fuzzer to mutate.
func FuzzGovTxs(f *testing.F) {
	for _, s := range seedScripts() {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Add(bytes.Repeat([]byte{0x80}, 3*maxFuzzBlocks))
	f.Add(bytes.Repeat([]byte{0x07, 0x00, 0x01, 0x01, 0x01}, maxFuzzTxs+1))
	h := newFuzzHarness(f)
	f.Fuzz(func(t *testing.T, in []byte) { h.run(t, in) })
}

// Bounds on one exec, so that each stays fast.
const (
	maxFuzzTxs    = 48
	maxFuzzBlocks = 12
	fuzzChain     = "fuzz-chain"
)

// fuzzSigners are the keys txs are signed with: the genesis governors of
// org-a, org-b and org-c, then accounts that the genesis gives org-a and
// org-b, and a stranger, who is on no chain until it applies for an org.
var fuzzSigners = []struct {
	name string
	org  string
	role Role
}{
	{"gov-org-a", "org-a", Role_ROLE_GOVERNOR},
	{"gov-org-b", "org-b", Role_ROLE_GOVERNOR},
	{"gov-org-c", "org-c", Role_ROLE_GOVERNOR},
	{"op-org-a", "org-a", Role_ROLE_OPERATOR},
	{"cc-org-a", "org-a", Role_ROLE_CROSSCHAIN},
	{"cc-org-b", "org-b", Role_ROLE_CROSSCHAIN},
	{"aud-org-a", "org-a", Role_ROLE_AUDITOR},
	{"stranger", "", Role_ROLE_UNSPECIFIED},
}

// Signer indices, for seedScripts.
const (
	sGovA = iota
	sGovB
	sGovC
	sOpA
	sCCA
	sCCB
	sAudA
	sStranger
)

// Nonce and envelope modes, bits 3-5 of a tx's control byte, and the
// other bits.
const (
	nonceNext     = 0 // modes 0-3: the signer's next nonce
	nonceReplay   = 4 // the nonce the signer used last
	nonceZero     = 5
	nonceBadChain = 6 // the next nonce, signed for another chain
	nonceBadSig   = 7 // the next nonce, with a corrupted signature
	ctlTwice      = 0x40
	ctlEndBlock   = 0x80
	ctlSignerMask = 0x07
	ctlModeShift  = 3
	ctlModeMask   = 0x07
)

func ctl(signer, mode int) byte { return byte(signer | mode<<ctlModeShift) }

// Vocabularies the field bytes index into (modulo their length). Each has
// the ids the seeds use, one that nothing registers, and an invalid one.
var (
	vOrgs      = []string{"org-a", "org-b", "org-c", "org-d", "org-x", "Bad/Id", ""}
	vRelays    = []string{"relay-a", "relay-b", "relay-x", ""}
	vSubchains = []string{"chain-a", "chain-b", "chain-x", ""}
	vApps      = []string{"app-a", "app-b", "app-x", ""}
	vContracts = []string{"ct-a", "ct-b", "ct-x", ""}
	vPipes     = []string{"p1", "p2", "p3", ""}
	vNames     = []string{"Org D", "", strings.Repeat("n", maxNameLen+1)}
	vAddresses = []string{"127.0.0.1:7000", "[::1]:1", "nope", "", "0xabc", strings.Repeat("a", maxAddressLen+1)}
	vKinds     = []string{"simchain", "", "evm"}
	vSuites    = []string{"ed25519", "", "rot13"}
	vReasons   = []string{"", "audit", strings.Repeat("r", maxReasonLen+1)}
	vActions   = []string{"retry", "rollback", "accept", "ignore", ""}
	vNodeIDs   = []string{strings.Repeat("0a", 20), strings.Repeat("0b", 20), "xyz", "", strings.Repeat("AB", 20)}
	// vKeyNames are keys that no account holds; fuzzKeys lists the
	// signers' keys, these, then bytes that are no key.
	vKeyNames = []string{"new-1", "new-2", "val-1"}
)

// fuzzKinds builds each message kind from field bytes.
var fuzzKinds = []func(r *fuzzReader, k *fuzzKeys) proto.Message{
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgApplyOrg{Id: pick(r, vOrgs), Name: pick(r, vNames), AccountName: pick(r, vNames)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgVote{ProposalId: r.num(), Approve: r.byte()&1 == 0}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgProposeAccount{Role: Role(r.byte() % 6), Suite: pick(r, vSuites), PublicKey: k.pub(r.byte()), Name: pick(r, vNames)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRegisterNode{Id: pick(r, vNodeIDs), Kind: NodeKind(r.byte() % 5), ConsensusPubKey: k.pub(r.byte()), P2PAddress: pick(r, vAddresses)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgRegisterService{RelayId: pick(r, vRelays), Address: pick(r, vAddresses)}
		switch r.byte() % 3 {
		case 1:
			m.TlsCertSha256 = bytes.Repeat([]byte{7}, 32)
		case 2:
			m.TlsCertSha256 = []byte{1}
		}
		m.Account = k.addr(r.byte())
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRegisterSubchain{Id: pick(r, vSubchains), Kind: pick(r, vKinds), RelayId: pick(r, vRelays)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRegisterApp{Id: pick(r, vApps), Subchain: pick(r, vSubchains), Account: k.addr(r.byte())}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRegisterContract{Id: pick(r, vContracts), App: pick(r, vApps), Address: pick(r, vAddresses)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgApplyPipe{Id: pick(r, vPipes), SourceContract: pick(r, vContracts), DestinationOrg: pick(r, vOrgs),
			DestinationSubchain: pick(r, vSubchains), Mode: ConsistencyMode(r.byte() % 4)}
		if b := r.byte(); b != 0 {
			m.Limits = &PipeLimits{MaxPayload: uint32(r.num()), RatePerSec: uint32(b)}
		}
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgAuthorizePipe{Id: pick(r, vPipes), DestinationContract: pick(r, vContracts)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgSuspendPipe{Id: pick(r, vPipes), Reason: pick(r, vReasons)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgResumePipe{Id: pick(r, vPipes)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgProposePipeMode{Pipe: pick(r, vPipes), Mode: ConsistencyMode(r.byte() % 4)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgOpenBatches{}
		for range r.byte() % 4 {
			b := &BatchOpen{FromRelay: pick(r, vRelays), ToRelay: pick(r, vRelays), BatchSeq: r.num(), MerkleRoot: r.root(), Count: uint32(r.num())}
			for range r.byte() % 4 {
				b.Ranges = append(b.Ranges, &PipeRange{Pipe: pick(r, vPipes), First: r.num(), Last: r.num(), Offset: uint32(r.num())})
			}
			m.Batches = append(m.Batches, b)
		}
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgAnchorReceipts{}
		for range r.byte() % 4 {
			b := &BatchReceipts{FromRelay: pick(r, vRelays), BatchSeq: r.num(), ReceiptRoot: r.root()}
			for range r.byte() % 8 {
				b.Statuses = append(b.Statuses, r.byte()%5)
			}
			m.Batches = append(m.Batches, b)
		}
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgConfirmBatches{}
		for range r.byte() % 4 {
			m.Batches = append(m.Batches, &BatchRef{FromRelay: pick(r, vRelays), BatchSeq: r.num()})
		}
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgTxException{State: PacketState(r.byte() % 10), Reason: pick(r, vReasons)}
		m.Packets = r.packets()
		return m
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgResolve{Action: pick(r, vActions), Note: pick(r, vReasons)}
		m.Packets = r.packets()
		return m
	},
	// The revocation kinds. A rotation's proof of possession is bytes the
	// fuzzer picks, so it exercises every refusal; revoke_test.go has the
	// signed rotations.
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRevokeAccount{Account: k.addr(r.byte()), Reason: pick(r, vReasons)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgProposeExpelOrg{Org: pick(r, vOrgs), Reason: pick(r, vReasons)}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		return &MsgRotateKey{NewSuite: pick(r, vSuites), NewPublicKey: k.pub(r.byte()), NewSignature: r.root()}
	},
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgUpdateService{RelayId: pick(r, vRelays), Address: pick(r, vAddresses)}
		switch r.byte() % 3 {
		case 1:
			m.TlsCertSha256 = bytes.Repeat([]byte{9}, 32)
		case 2:
			m.TlsCertSha256 = []byte{1}
		}
		return m
	},
	// A credit report: kind (org, relay or neither), party, score (byte*5,
	// so some are over 1000), window start and length (num: edges make
	// negative and overflowing windows), digest.
	func(r *fuzzReader, k *fuzzKeys) proto.Message {
		m := &MsgReportCredit{Kind: PartyKind(r.byte() % 3)}
		if m.Kind == PartyKind_PARTY_RELAY {
			m.Party = pick(r, vRelays)
		} else {
			m.Party = pick(r, vOrgs)
		}
		m.Score = uint32(r.byte()) * 5
		m.WindowStart = int64(r.num())
		m.WindowEnd = m.WindowStart + int64(r.num())
		m.EvidenceDigest = r.root()
		return m
	},
}

// fuzzReader hands out the input's bytes; past the end it reads zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// num reads a small number, or for the top 16 byte values a number at an
// edge: of uint32, int64, uint64, and the chain's limits.
func (r *fuzzReader) num() uint64 {
	edges := [16]uint64{20, 21, 255, 256, 1000, 1 << 16, 1 << 20, 1<<20 + 1,
		math.MaxInt32, math.MaxUint32, 1 << 32, math.MaxInt64, 1 << 63, math.MaxUint64 - 1, math.MaxUint64, 100_000}
	b := r.byte()
	if b >= 0xf0 {
		return edges[b-0xf0]
	}
	return uint64(b % 16)
}

// root reads a 32-byte root (its bytes all alike) or, for 0, a short one.
func (r *fuzzReader) root() []byte {
	b := r.byte()
	if b == 0 {
		return []byte{1}
	}
	return bytes.Repeat([]byte{b}, 32)
}

func (r *fuzzReader) packets() []*PacketRef {
	var ps []*PacketRef
	for range r.byte() % 4 {
		ps = append(ps, &PacketRef{Pipe: pick(r, vPipes), Seq: r.num()})
	}
	return ps
}

func pick(r *fuzzReader, v []string) string { return v[int(r.byte())%len(v)] }

// fuzzKeys holds the signers and the keys and addresses messages name.
type fuzzKeys struct {
	signers []crypto.Signer
	pubs    [][]byte // the signers', then vKeyNames', then junk
	addrs   [][]byte
}

func (k *fuzzKeys) pub(b byte) []byte  { return k.pubs[int(b)%len(k.pubs)] }
func (k *fuzzKeys) addr(b byte) []byte { return k.addrs[int(b)%len(k.addrs)] }

type fuzzHarness struct {
	keys    fuzzKeys
	genesis *GenesisState
	// verified is shared by every app the harness makes, across execs: a
	// tx's signature is checked once, the first time its bytes are seen.
	// The cache is keyed by the hash of all of a tx's bytes, so a hit
	// means the same signature over the same body; it is how CheckTx and
	// FinalizeBlock already share it.
	verified *sigCache
	// signed memoizes NewTx by signer and body bytes: signing is most of
	// an exec's cost, and the fuzzer repeats txs.
	signed map[string][]byte
}

func newFuzzHarness(f testing.TB) *fuzzHarness {
	h := &fuzzHarness{verified: newSigCache(), signed: map[string][]byte{}}
	gs := &GenesisState{Params: &Params{QuorumNum: 2, QuorumDen: 3, VotingPeriod: 3}}
	for _, o := range []string{"org-a", "org-b", "org-c"} {
		gs.Orgs = append(gs.Orgs, &GenesisOrg{Id: o, Name: strings.ToUpper(o)})
	}
	for _, s := range fuzzSigners {
		key := crypto.DevSigner(s.name)
		h.keys.signers = append(h.keys.signers, key)
		if s.org != "" {
			gs.Accounts = append(gs.Accounts, &GenesisAccount{Org: s.org, Role: s.role, Suite: string(crypto.SuiteEd25519), PublicKey: key.PublicKey(), Name: s.name})
		}
	}
	var keys []crypto.Signer
	keys = append(keys, h.keys.signers...)
	for _, n := range vKeyNames {
		keys = append(keys, crypto.DevSigner(n))
	}
	for _, s := range keys {
		h.keys.pubs = append(h.keys.pubs, s.PublicKey())
		h.keys.addrs = append(h.keys.addrs, addr(s))
	}
	h.keys.pubs = append(h.keys.pubs, nil, []byte{1, 2})
	h.keys.addrs = append(h.keys.addrs, nil, []byte{1, 2})
	h.genesis = gs
	return h
}

func (h *fuzzHarness) newApp(t testing.TB) *Application {
	app, err := NewInMemoryApp(nil)
	if err != nil {
		t.Fatal(err)
	}
	app.verified = h.verified
	// InitChain less its JSON decoding, a tenth of an exec.
	if err := app.initState(fuzzChain, proto.CloneOf(h.genesis)); err != nil {
		t.Fatal(err)
	}
	return app
}

// tx signs body for signer s as mode says.
func (h *fuzzHarness) tx(t testing.TB, s int, mode byte, nonce uint64, body *TxBody) []byte {
	chain := fuzzChain
	if mode == nonceBadChain {
		chain = "other-chain"
	}
	body.ChainId, body.Nonce = chain, nonce
	b, err := marshal.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	key := string(rune('0'+s)) + string(b)
	raw, ok := h.signed[key]
	if !ok {
		if raw, err = NewTx(h.keys.signers[s], chain, nonce, body); err != nil {
			t.Fatal(err)
		}
		if len(h.signed) > 1<<16 {
			clear(h.signed)
		}
		h.signed[key] = raw
	}
	if mode == nonceBadSig {
		var tx Tx
		if err := proto.Unmarshal(raw, &tx); err != nil {
			t.Fatal(err)
		}
		tx.Signature[0] ^= 0x80
		if raw, err = marshal.Marshal(&tx); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

// blocks turns the input into blocks of signed txs.
func (h *fuzzHarness) blocks(t testing.TB, in []byte) [][][]byte {
	r := &fuzzReader{b: in}
	var blocks [][][]byte
	var cur [][]byte
	last := make([]uint64, len(h.keys.signers)) // the last nonce each signer used
	for n := 0; len(r.b) > 0 && n < maxFuzzTxs && len(blocks) < maxFuzzBlocks; n++ {
		c, kind := r.byte(), int(r.byte())%(len(fuzzKinds)+1)
		s := int(c & ctlSignerMask)
		body := &TxBody{} // kind len(fuzzKinds): no message
		if kind < len(fuzzKinds) {
			body = Wrap(fuzzKinds[kind](r, &h.keys))
		}
		mode := c >> ctlModeShift & ctlModeMask
		var nonce uint64
		switch mode {
		case nonceReplay:
			nonce = last[s]
		case nonceZero:
		default:
			last[s]++
			nonce = last[s]
		}
		raw := h.tx(t, s, mode, nonce, body)
		cur = append(cur, raw)
		if c&ctlTwice != 0 {
			cur = append(cur, raw)
		}
		if c&ctlEndBlock != 0 {
			blocks, cur = append(blocks, cur), nil
		}
	}
	if len(cur) > 0 && len(blocks) < maxFuzzBlocks {
		blocks = append(blocks, cur)
	}
	return blocks
}

func (h *fuzzHarness) run(t testing.TB, in []byte) {
	blocks := h.blocks(t, in)
	a, b := h.newApp(t), h.newApp(t)
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	for i, txs := range blocks {
		height := int64(i + 1)
		// CheckTx (against the last commit) must refuse a bad envelope
		// (bytes, size, chain, nonce 0, signature: what no state changes)
		// as FinalizeBlock does.
		envelope := make([]*TxError, len(txs))
		for j, raw := range txs {
			_, envelope[j] = decodeTx(raw, fuzzChain, int(a.params.MaxTxBytes), h.verified)
			ct, err := a.CheckTx(ctx, &abci.CheckTxRequest{Tx: raw})
			switch {
			case err != nil:
				t.Fatalf("height %d tx %d: CheckTx: %v", height, j, err)
			case envelope[j] != nil && ct.Code != envelope[j].Code:
				t.Fatalf("height %d tx %d: CheckTx code %d (%s), the envelope's %d (%s)", height, j, ct.Code, ct.Log, envelope[j].Code, envelope[j].Msg)
			case ct.Code != CodeOK && ct.Log == "":
				t.Fatalf("height %d tx %d: CheckTx code %d without a reason", height, j, ct.Code)
			}
		}
		req := &abci.FinalizeBlockRequest{Height: height, Txs: txs}
		ra, err := a.FinalizeBlock(ctx, req)
		if err != nil {
			t.Fatalf("height %d: app a: %v", height, err)
		}
		rb, err := b.FinalizeBlock(ctx, req)
		if err != nil {
			t.Fatalf("height %d: app b: %v", height, err)
		}
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("height %d: the apps disagree:\n%v\n%v", height, ra, rb)
		}
		for j, res := range ra.TxResults {
			switch {
			case res.Code != CodeOK && res.Log == "":
				t.Fatalf("height %d tx %d: code %d without a reason", height, j, res.Code)
			case envelope[j] != nil && res.Code != envelope[j].Code:
				t.Fatalf("height %d tx %d: FinalizeBlock code %d (%s), the envelope's %d (%s)", height, j, res.Code, res.Log, envelope[j].Code, envelope[j].Msg)
			}
		}
		for _, app := range []*Application{a, b} {
			if _, err := app.Commit(ctx, &abci.CommitRequest{}); err != nil {
				t.Fatalf("height %d: commit: %v", height, err)
			}
		}
		ia, _ := a.Info(ctx, &abci.InfoRequest{})
		ib, _ := b.Info(ctx, &abci.InfoRequest{})
		if ia.LastBlockHeight != height || !bytes.Equal(ia.LastBlockAppHash, ra.AppHash) || !bytes.Equal(ib.LastBlockAppHash, ra.AppHash) {
			t.Fatalf("height %d: committed %d %x and %x, block said %x", height, ia.LastBlockHeight, ia.LastBlockAppHash, ib.LastBlockAppHash, ra.AppHash)
		}
	}
}

// seedScripts are paths through the state machine, encoded as FuzzGovTxs
// reads them: the consortium's registrations, a pipe and its batch
// anchors, exceptions, proposals and votes, and adversarial variants.
func seedScripts() [][]byte {
	const end = ctlEndBlock
	tx := func(c byte, kind int, fields ...byte) []byte { return append([]byte{c, byte(kind)}, fields...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	const (
		kApplyOrg = iota
		kVote
		kProposeAccount
		kRegisterNode
		kRegisterService
		kRegisterSubchain
		kRegisterApp
		kRegisterContract
		kApplyPipe
		kAuthorizePipe
		kSuspendPipe
		kResumePipe
		kProposePipeMode
		kOpenBatches
		kAnchorReceipts
		kConfirmBatches
		kTxException
		kResolve
		kRevokeAccount
		kProposeExpelOrg
		kRotateKey
		kUpdateService
		kReportCredit
	)
	// Indices into the vocabularies and key lists.
	const (
		orgA, orgB, orgC, orgD = 0, 1, 2, 3
		relayA, relayB         = 0, 1
		chainA, chainB         = 0, 1
		appA, appB             = 0, 1
		ctA, ctB               = 0, 1
		p1                     = 0
		hostPort, evmAddr      = 0, 4
		simchain               = 0
		keyNew1                = 8
	)
	consortium := cat(
		tx(ctl(sGovA, 0), kRegisterService, relayA, hostPort, 1, sCCA),
		tx(ctl(sGovB, 0)|end, kRegisterService, relayB, hostPort, 1, sCCB),
		tx(ctl(sGovA, 0), kRegisterSubchain, chainA, simchain, relayA),
		tx(ctl(sGovB, 0)|end, kRegisterSubchain, chainB, simchain, relayB),
		tx(ctl(sOpA, 0), kRegisterApp, appA, chainA, sCCA),
		tx(ctl(sGovB, 0)|end, kRegisterApp, appB, chainB, sCCB),
		tx(ctl(sOpA, 0), kRegisterContract, ctA, appA, evmAddr),
		tx(ctl(sGovB, 0)|end, kRegisterContract, ctB, appB, evmAddr),
	)
	pipe := cat(
		tx(ctl(sGovA, 0), kApplyPipe, p1, ctA, orgB, chainB, 1, 0),
		tx(ctl(sGovB, 0)|end, kAuthorizePipe, p1, ctB),
	)
	// Batch 1 of relay-a holds p1 1..3; relay-b receipts it, relay-a confirms.
	anchors := cat(
		tx(ctl(sCCA, 0)|end, kOpenBatches, 1, relayA, relayB, 1, 0x11, 3, 1, p1, 1, 3, 0),
		tx(ctl(sCCB, 0)|end, kAnchorReceipts, 1, relayA, 1, 0x22, 3, 1, 1, 2),
		tx(ctl(sCCA, 0), kConfirmBatches, 1, relayA, 1),
		tx(ctl(sCCA, 0), kTxException, byte(PacketState_PACKET_FAILED), 1, 1, p1, 3),
		tx(ctl(sCCA, 0)|end, kTxException, byte(PacketState_PACKET_MANUAL), 1, 1, p1, 3),
		tx(ctl(sGovB, 0)|end, kResolve, 0, 1, 1, p1, 3),
	)
	governance := cat(
		tx(ctl(sStranger, 0)|end, kApplyOrg, orgD, 0, 1),
		tx(ctl(sGovA, 0), kVote, 1, 0),
		tx(ctl(sGovB, 0), kVote, 1, 0),
		tx(ctl(sGovC, 0)|end, kVote, 1, 0),
		tx(ctl(sGovA, 0)|end, kProposeAccount, byte(Role_ROLE_OPERATOR), 0, keyNew1, 1),
		tx(ctl(sGovA, 0), kRegisterNode, 1, byte(NodeKind_NODE_GOVERNANCE), 10, 0),
		tx(ctl(sGovA, 0)|end, kRegisterNode, 0, byte(NodeKind_NODE_AUDIT), 0, hostPort),
		tx(ctl(sGovA, 0), kVote, 2, 0),
		tx(ctl(sGovB, 0), kVote, 2, 0),
		tx(ctl(sGovC, 0)|end, kVote, 3, 1),
	)
	adversarial := cat(
		tx(ctl(sGovA, nonceReplay), kResumePipe, p1),
		tx(ctl(sGovA, nonceZero), kResumePipe, p1),
		tx(ctl(sGovA, nonceBadChain), kResumePipe, p1),
		tx(ctl(sGovA, nonceBadSig)|ctlTwice, kResumePipe, p1),
		tx(ctl(sAudA, 0), kSuspendPipe, p1, 1),
		tx(ctl(sStranger, 0)|end, kSuspendPipe, p1, 1),
		tx(ctl(sGovA, 0)|ctlTwice|end, kSuspendPipe, p1, 2),
		tx(ctl(sGovA, 0), len(fuzzKinds)),
	)
	// The auditor scores relay-a below restrict (p1 is shaped), org-b
	// below expel (a proposal opens, once), then relay-a recovers.
	credit := cat(
		tx(ctl(sAudA, 0)|end, kReportCredit, byte(PartyKind_PARTY_RELAY), relayA, 100, 1, 2, 7),
		tx(ctl(sAudA, 0), kReportCredit, byte(PartyKind_PARTY_ORG), orgB, 40, 2, 2, 7),
		tx(ctl(sAudA, 0)|end, kReportCredit, byte(PartyKind_PARTY_ORG), orgB, 20, 3, 2, 7),
		tx(ctl(sAudA, 0)|end, kReportCredit, byte(PartyKind_PARTY_RELAY), relayA, 180, 4, 2, 7),
	)
	txControl := cat(consortium, pipe, anchors)
	return [][]byte{
		consortium,
		cat(consortium, pipe),
		txControl,
		cat(txControl, tx(ctl(sGovA, 0)|end, kProposePipeMode, p1, byte(ConsistencyMode_MODE_STRICT)),
			tx(ctl(sGovC, 0)|end, kSuspendPipe, p1, 1), tx(ctl(sGovB, 0)|end, kResumePipe, p1)),
		governance,
		cat(consortium, pipe, adversarial),
		cat(consortium, pipe, credit),
	}
}

// TestFuzzGovTxsSeeds checks that the seeds reach what they are for, so
// that a change to the encoding cannot quietly make them useless.
func TestFuzzGovTxsSeeds(t *testing.T) {
	h := newFuzzHarness(t)
	scripts := seedScripts()
	a := h.newApp(t)
	defer a.Close()
	var ok, txs int
	for i, txs0 := range h.blocks(t, scripts[2]) {
		resp, err := a.FinalizeBlock(context.Background(), &abci.FinalizeBlockRequest{Height: int64(i + 1), Txs: txs0})
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range resp.TxResults {
			txs++
			if r.Code == CodeOK {
				ok++
			} else {
				t.Errorf("block %d tx %d: code %d: %s", i+1, j, r.Code, r.Log)
			}
		}
		if _, err := a.Commit(context.Background(), &abci.CommitRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if txs == 0 || ok != txs {
		t.Fatalf("the transaction-control seed: %d of %d txs accepted", ok, txs)
	}
	// The credit seed (the last) reaches the sanction rule: relay-a
	// restricted and lifted, org-b restricted with one expulsion proposal.
	c := h.newApp(t)
	defer c.Close()
	for i, txs := range h.blocks(t, scripts[len(scripts)-1]) {
		resp, err := c.FinalizeBlock(context.Background(), &abci.FinalizeBlockRequest{Height: int64(i + 1), Txs: txs})
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range resp.TxResults {
			if r.Code != CodeOK {
				t.Errorf("credit seed block %d tx %d: code %d: %s", i+1, j, r.Code, r.Log)
			}
		}
		if _, err := c.Commit(context.Background(), &abci.CommitRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	pipe, st := &Pipe{}, &CreditStanding{}
	if _, err := load(c.committed, KeyPipe("p1"), pipe); err != nil || !slices.Equal(pipe.RestrictedBy, []string{"org:org-b"}) {
		t.Fatalf("credit seed: p1 restricted by %v (%v)", pipe.RestrictedBy, err)
	}
	if _, err := load(c.committed, KeyCreditStanding(PartyKind_PARTY_ORG, "org-b"), st); err != nil || st.ExpelProposal == 0 {
		t.Fatalf("credit seed: org-b standing %v (%v)", st, err)
	}
	for _, s := range scripts {
		h.run(t, s)
	}
	// Every message of the Tx oneof has a kind.
	kinds := map[protoreflect.FieldNumber]bool{}
	for _, k := range fuzzKinds {
		body := Wrap(k(&fuzzReader{}, &h.keys))
		body.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			kinds[fd.Number()] = true
			return true
		})
	}
	if want := (&TxBody{}).ProtoReflect().Descriptor().Oneofs().ByName("msg").Fields().Len(); len(kinds) != want {
		t.Fatalf("fuzzKinds builds %d of the %d message kinds; add the new ones", len(kinds), want)
	}
}

// BenchmarkFuzzGovTxs is the cost of one FuzzGovTxs exec on each seed
// script, to keep an exec fast enough (a few hundred per second) for the
// fuzzer to get anywhere in a CI run.
func BenchmarkFuzzGovTxs(b *testing.B) {
	h := newFuzzHarness(b)
	for i, s := range seedScripts() {
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			for b.Loop() {
				h.run(b, s)
			}
		})
	}
}
