package govchain

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

const testChain = "test-chain"

// chain drives an Application block by block, as consensus would.
type chain struct {
	t      *testing.T
	app    *Application
	height int64
	nonces map[crypto.Address]uint64
}

func genesisFor(orgs ...string) *GenesisState {
	gs := &GenesisState{Params: &Params{QuorumNum: 2, QuorumDen: 3, VotingPeriod: 20}}
	for _, o := range orgs {
		gs.Orgs = append(gs.Orgs, &GenesisOrg{Id: o, Name: strings.ToUpper(o)})
		gs.Accounts = append(gs.Accounts, &GenesisAccount{Org: o, Role: Role_ROLE_GOVERNOR, Suite: "ed25519",
			PublicKey: crypto.DevSigner("gov-" + o).PublicKey(), Name: "gov-" + o})
	}
	return gs
}

func newChain(t *testing.T, app *Application, gs *GenesisState) *chain {
	t.Helper()
	raw, err := EncodeGenesisState(gs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.InitChain(context.Background(), &abci.InitChainRequest{ChainId: testChain, AppStateBytes: raw, InitialHeight: 1}); err != nil {
		t.Fatal(err)
	}
	return &chain{t: t, app: app, nonces: map[crypto.Address]uint64{}}
}

func newMemChain(t *testing.T) *chain {
	t.Helper()
	app, err := NewInMemoryApp(nil)
	if err != nil {
		t.Fatal(err)
	}
	return newChain(t, app, genesisFor("org-a", "org-b", "org-c"))
}

func gov(org string) crypto.Signer { return crypto.DevSigner("gov-" + org) }

func (c *chain) tx(s crypto.Signer, m proto.Message) []byte {
	c.t.Helper()
	a := crypto.SignerAddress(s)
	c.nonces[a]++
	raw, err := NewTx(s, testChain, c.nonces[a], Wrap(m))
	if err != nil {
		c.t.Fatal(err)
	}
	return raw
}

// block commits txs in one block and returns their results.
func (c *chain) block(txs ...[]byte) *abci.FinalizeBlockResponse {
	c.t.Helper()
	c.height++
	resp, err := c.app.FinalizeBlock(context.Background(), &abci.FinalizeBlockRequest{Height: c.height, Txs: txs})
	if err != nil {
		c.t.Fatalf("FinalizeBlock: %v", err)
	}
	if _, err := c.app.Commit(context.Background(), &abci.CommitRequest{}); err != nil {
		c.t.Fatalf("Commit: %v", err)
	}
	return resp
}

// ok sends m from s in its own block and fails the test unless accepted.
func (c *chain) ok(s crypto.Signer, m proto.Message) *abci.ExecTxResult {
	c.t.Helper()
	r := c.block(c.tx(s, m)).TxResults[0]
	if r.Code != CodeOK {
		c.t.Fatalf("%T rejected: code %d: %s", m, r.Code, r.Log)
	}
	return r
}

// rejected sends m and checks the code and that the reason names want.
func (c *chain) rejected(s crypto.Signer, m proto.Message, code uint32, want string) {
	c.t.Helper()
	r := c.block(c.tx(s, m)).TxResults[0]
	if r.Code != code || !strings.Contains(r.Log, want) {
		c.t.Fatalf("%T: got code %d %q, want code %d containing %q", m, r.Code, r.Log, code, want)
	}
}

func (c *chain) get(key []byte, m proto.Message) bool {
	c.t.Helper()
	found, err := load(c.app.committed, key, m)
	if err != nil {
		c.t.Fatal(err)
	}
	return found
}

func proposalID(t *testing.T, r *abci.ExecTxResult) uint64 {
	t.Helper()
	for _, e := range r.Events {
		if e.Type == "proposal" {
			for _, a := range e.Attributes {
				if a.Key == "id" {
					id, err := strconv.ParseUint(a.Value, 10, 64)
					if err != nil {
						t.Fatalf("proposal id %q: %v", a.Value, err)
					}
					return id
				}
			}
		}
	}
	t.Fatal("no proposal event")
	return 0
}

// passVote has every genesis org approve proposal id.
func (c *chain) passVote(id uint64) {
	c.t.Helper()
	for _, o := range []string{"org-a", "org-b", "org-c"} {
		c.ok(gov(o), &MsgVote{ProposalId: id, Approve: true})
	}
	p := &Proposal{}
	c.get(KeyProposal(id), p)
	if p.Status != ProposalStatus_PROPOSAL_PASSED {
		c.t.Fatalf("proposal %d is %v after all votes", id, p.Status)
	}
}

// admitAccount proposes an account of s's org and votes it in.
func (c *chain) admitAccount(s crypto.Signer, role Role, newKey crypto.Signer) {
	c.t.Helper()
	r := c.ok(s, &MsgProposeAccount{Role: role, Suite: "ed25519", PublicKey: newKey.PublicKey()})
	c.passVote(proposalID(c.t, r))
}

func addr(s crypto.Signer) []byte { a := crypto.SignerAddress(s); return a[:] }

// fp is a TLS certificate fingerprint for services in tests.
var fp = make([]byte, 32)

// consortium builds: org-a and org-b each with relay, subchain, app,
// contract; org-d admitted by vote.
func (c *chain) consortium() {
	c.t.Helper()
	for _, o := range []string{"org-a", "org-b"} {
		cc := crypto.DevSigner("cc-" + o)
		c.admitAccount(gov(o), Role_ROLE_CROSSCHAIN, cc)
		c.ok(gov(o), &MsgRegisterService{RelayId: "relay-" + o, Address: "127.0.0.1:7000", TlsCertSha256: fp, Account: addr(cc)})
		c.ok(gov(o), &MsgRegisterSubchain{Id: "chain-" + o, Kind: "simchain", RelayId: "relay-" + o})
		c.ok(gov(o), &MsgRegisterApp{Id: "app-" + o, Subchain: "chain-" + o, Account: addr(cc)})
		c.ok(gov(o), &MsgRegisterContract{Id: "ct-" + o, App: "app-" + o, Address: "0xabc"})
	}
}

func TestOrgAdmissionByVote(t *testing.T) {
	c := newMemChain(t)
	applicant := crypto.DevSigner("org-d-admin")
	r := c.ok(applicant, &MsgApplyOrg{Id: "org-d", Name: "Org D"})
	id := proposalID(t, r)

	org := &Org{}
	c.get(KeyOrg("org-d"), org)
	if org.Status != OrgStatus_ORG_PENDING {
		t.Fatalf("org before votes: %v", org.Status)
	}
	// A pending account may not act yet.
	c.rejected(applicant, &MsgRegisterService{RelayId: "r", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(applicant)}, CodeUnauthorized, "pending")

	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
	c.rejected(gov("org-a"), &MsgVote{ProposalId: id, Approve: true}, CodeDoubleVote, "already voted")
	c.ok(gov("org-b"), &MsgVote{ProposalId: id, Approve: true})
	c.get(KeyOrg("org-d"), org)
	if org.Status != OrgStatus_ORG_PENDING {
		t.Fatal("2 of 3 is not more than 2/3: org admitted too early")
	}
	c.ok(gov("org-c"), &MsgVote{ProposalId: id, Approve: true})
	c.get(KeyOrg("org-d"), org)
	if org.Status != OrgStatus_ORG_ACTIVE {
		t.Fatalf("org after votes: %v", org.Status)
	}
	acct := &Account{}
	c.get(KeyAccount(crypto.SignerAddress(applicant)), acct)
	if acct.Status != AccountStatus_ACCOUNT_ACTIVE || acct.Role != Role_ROLE_OPERATOR {
		t.Fatalf("applicant account: %v", acct)
	}
	c.rejected(gov("org-a"), &MsgVote{ProposalId: id, Approve: true}, CodeBadState, "already passed")
	// A member org's operator cannot vote: only genesis governors do.
	c.rejected(applicant, &MsgVote{ProposalId: id, Approve: true}, CodeUnauthorized, "role operator")
}

func TestOrgRejectedAndExpired(t *testing.T) {
	c := newMemChain(t)
	r := c.ok(crypto.DevSigner("x"), &MsgApplyOrg{Id: "org-x", Name: "X"})
	id := proposalID(t, r)
	// With 3 genesis orgs, "more than 2/3" needs all three: one no decides.
	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: false})
	org := &Org{}
	c.get(KeyOrg("org-x"), org)
	if org.Status != OrgStatus_ORG_REJECTED {
		t.Fatalf("a proposal that can no longer pass must be rejected: %v", org.Status)
	}
	c.rejected(gov("org-b"), &MsgVote{ProposalId: id, Approve: true}, CodeBadState, "already rejected")

	r = c.ok(crypto.DevSigner("y"), &MsgApplyOrg{Id: "org-y", Name: "Y"})
	id = proposalID(t, r)
	for i := 0; i < 21; i++ {
		c.block()
	}
	p := &Proposal{}
	c.get(KeyProposal(id), p)
	if p.Status != ProposalStatus_PROPOSAL_EXPIRED {
		t.Fatalf("proposal after deadline: %v", p.Status)
	}
	c.get(KeyOrg("org-y"), org)
	if org.Status != OrgStatus_ORG_REJECTED {
		t.Fatalf("org of an expired proposal: %v", org.Status)
	}
	c.rejected(gov("org-a"), &MsgVote{ProposalId: id, Approve: true}, CodeBadState, "expired")
	c.rejected(gov("org-a"), &MsgVote{ProposalId: 999, Approve: true}, CodeNotFound, "does not exist")
	c.rejected(crypto.DevSigner("z"), &MsgApplyOrg{Id: "org-a", Name: "dup"}, CodeExists, "already exists")
	c.rejected(crypto.DevSigner("z2"), &MsgApplyOrg{Id: "Bad/Id", Name: "x"}, CodeInvalid, "org id")
	c.rejected(gov("org-a"), &MsgApplyOrg{Id: "org-q", Name: "x"}, CodeInvalid, "already belongs")
}

func TestAccountsAndRoles(t *testing.T) {
	c := newMemChain(t)
	op := crypto.DevSigner("op-a")
	c.admitAccount(gov("org-a"), Role_ROLE_OPERATOR, op)
	aud := crypto.DevSigner("aud-a")
	c.admitAccount(op, Role_ROLE_AUDITOR, aud)

	c.rejected(aud, &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: crypto.DevSigner("n").PublicKey()}, CodeUnauthorized, "auditor")
	c.rejected(op, &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: []byte{1, 2}}, CodeInvalid, "public key")
	c.rejected(op, &MsgProposeAccount{Role: Role_ROLE_UNSPECIFIED, Suite: "ed25519", PublicKey: crypto.DevSigner("n").PublicKey()}, CodeInvalid, "role must be")
	c.rejected(op, &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: aud.PublicKey()}, CodeExists, "already exists")
	c.rejected(crypto.DevSigner("stranger"), &MsgSuspendPipe{Id: "p"}, CodeUnknownSender, "not on chain")

	// A non-genesis org may not create governors.
	d := crypto.DevSigner("org-d-admin")
	c.passVote(proposalID(t, c.ok(d, &MsgApplyOrg{Id: "org-d", Name: "D"})))
	c.rejected(d, &MsgProposeAccount{Role: Role_ROLE_GOVERNOR, Suite: "ed25519", PublicKey: crypto.DevSigner("g").PublicKey()}, CodeUnauthorized, "only genesis orgs")

	// An account proposed but not voted in cannot act.
	pending := crypto.DevSigner("pending")
	c.ok(op, &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: pending.PublicKey()})
	c.rejected(pending, &MsgRegisterSubchain{Id: "s", Kind: "k", RelayId: "r"}, CodeUnauthorized, "pending")
}

func TestTxEnvelopeRejections(t *testing.T) {
	c := newMemChain(t)
	s := gov("org-a")
	good := c.tx(s, &MsgResumePipe{Id: "p"})
	c.block(good)

	wrongChain, _ := NewTx(s, "other", 99, Wrap(&MsgResumePipe{Id: "p"}))
	badSig := func() []byte {
		var tx Tx
		_ = proto.Unmarshal(c.tx(s, &MsgResumePipe{Id: "p"}), &tx)
		tx.Signature[0] ^= 0xff
		b, _ := proto.Marshal(&tx)
		return b
	}()
	otherKey := func() []byte {
		var tx Tx
		_ = proto.Unmarshal(c.tx(s, &MsgResumePipe{Id: "p"}), &tx)
		tx.PublicKey = gov("org-b").PublicKey()
		b, _ := proto.Marshal(&tx)
		return b
	}()
	zeroNonce, _ := NewTx(s, testChain, 0, Wrap(&MsgResumePipe{Id: "p"}))
	noMsg, _ := NewTx(s, testChain, 500, &TxBody{})
	huge, _ := NewTx(s, testChain, 501, Wrap(&MsgSuspendPipe{Id: "p", Reason: strings.Repeat("x", DefaultMaxTxBytes)}))

	cases := []struct {
		name string
		raw  []byte
		code uint32
		want string
	}{
		{"replay", good, CodeBadNonce, "replayed"},
		{"garbage", []byte{0xff, 0x01, 0x02}, CodeMalformed, "do not decode"},
		{"empty", nil, CodeMalformed, "no body"},
		{"wrong chain", wrongChain, CodeWrongChain, "other"},
		{"bad signature", badSig, CodeBadSignature, "signature"},
		{"key swapped", otherKey, CodeBadSignature, "signature"},
		{"zero nonce", zeroNonce, CodeBadNonce, "at least 1"},
		{"no message", noMsg, CodeMalformed, "no message"},
		{"too large", huge, CodeTooLarge, "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct, err := c.app.CheckTx(context.Background(), &abci.CheckTxRequest{Tx: tc.raw})
			if err != nil {
				t.Fatal(err)
			}
			if ct.Code != tc.code || !strings.Contains(ct.Log, tc.want) {
				t.Fatalf("CheckTx: code %d %q, want %d containing %q", ct.Code, ct.Log, tc.code, tc.want)
			}
			// A proposer may include it anyway: FinalizeBlock rejects it the same way.
			r := c.block(tc.raw).TxResults[0]
			if r.Code != tc.code {
				t.Fatalf("FinalizeBlock: code %d %q, want %d", r.Code, r.Log, tc.code)
			}
		})
	}
}

func TestRegistryRejections(t *testing.T) {
	c := newMemChain(t)
	c.consortium()
	ccA, ccB := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-b")
	pendingCC := crypto.DevSigner("pending-cc")
	c.ok(gov("org-a"), &MsgProposeAccount{Role: Role_ROLE_CROSSCHAIN, Suite: "ed25519", PublicKey: pendingCC.PublicKey()})
	ga := gov("org-a")
	cases := []struct {
		name string
		m    proto.Message
		code uint32
		want string
	}{
		{"service bad address", &MsgRegisterService{RelayId: "r1", Address: "nope", TlsCertSha256: fp, Account: addr(ccA)}, CodeInvalid, "host:port"},
		{"service bad fingerprint", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", TlsCertSha256: []byte{1}, Account: addr(ccA)}, CodeInvalid, "fingerprint"},
		{"service no fingerprint", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", Account: addr(ccA)}, CodeInvalid, "TLS fingerprint must be"},
		{"service other org account", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(ccB)}, CodeUnauthorized, "belongs to org org-b"},
		{"service governor account", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(ga)}, CodeInvalid, "cross-chain"},
		{"service pending account", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(pendingCC)}, CodeBadState, "not active"},
		{"service unknown account", &MsgRegisterService{RelayId: "r1", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(crypto.DevSigner("nobody"))}, CodeNotFound, "does not exist"},
		{"service duplicate", &MsgRegisterService{RelayId: "relay-org-a", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(ccA)}, CodeExists, "already registered"},
		{"subchain unknown relay", &MsgRegisterSubchain{Id: "s1", Kind: "simchain", RelayId: "nope"}, CodeNotFound, "not registered"},
		{"subchain other org relay", &MsgRegisterSubchain{Id: "s1", Kind: "simchain", RelayId: "relay-org-b"}, CodeUnauthorized, "belongs to org org-b"},
		{"subchain duplicate", &MsgRegisterSubchain{Id: "chain-org-a", Kind: "simchain", RelayId: "relay-org-a"}, CodeExists, "already registered"},
		{"subchain bad kind", &MsgRegisterSubchain{Id: "s1", Kind: "", RelayId: "relay-org-a"}, CodeInvalid, "kind"},
		{"app other org subchain", &MsgRegisterApp{Id: "a1", Subchain: "chain-org-b", Account: addr(ccA)}, CodeUnauthorized, "belongs to org org-b"},
		{"app unknown subchain", &MsgRegisterApp{Id: "a1", Subchain: "nope", Account: addr(ccA)}, CodeNotFound, "not registered"},
		{"app duplicate", &MsgRegisterApp{Id: "app-org-a", Subchain: "chain-org-a", Account: addr(ccA)}, CodeExists, "already registered"},
		{"contract unknown app", &MsgRegisterContract{Id: "c1", App: "nope", Address: "0x1"}, CodeNotFound, "not registered"},
		{"contract other org app", &MsgRegisterContract{Id: "c1", App: "app-org-b", Address: "0x1"}, CodeUnauthorized, "belongs to org org-b"},
		{"contract no address", &MsgRegisterContract{Id: "c1", App: "app-org-a"}, CodeInvalid, "address"},
		{"contract duplicate", &MsgRegisterContract{Id: "ct-org-a", App: "app-org-a", Address: "0x1"}, CodeExists, "already registered"},
		{"node bad id", &MsgRegisterNode{Id: "xyz", Kind: NodeKind_NODE_AUDIT}, CodeInvalid, "40 hex"},
		{"node genesis kind", &MsgRegisterNode{Id: strings.Repeat("ab", 20), Kind: NodeKind_NODE_GENESIS}, CodeInvalid, "kind"},
		{"validator without key", &MsgRegisterNode{Id: strings.Repeat("ab", 20), Kind: NodeKind_NODE_GOVERNANCE}, CodeInvalid, "consensus key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { c.rejected(ga, tc.m, tc.code, tc.want) })
	}
	// A cross-chain account cannot govern.
	c.rejected(ccA, &MsgRegisterSubchain{Id: "s9", Kind: "simchain", RelayId: "relay-org-a"}, CodeUnauthorized, "role cross-chain")
}

func TestPipeLifecycle(t *testing.T) {
	c := newMemChain(t)
	c.consortium()
	ga, gb, gcc := gov("org-a"), gov("org-b"), gov("org-c")
	apply := &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b", Mode: ConsistencyMode_MODE_STRICT}

	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    proto.Message
		code uint32
		want string
	}{
		{"not source org", gb, apply, CodeUnauthorized, "only the source org"},
		{"unknown contract", ga, &MsgApplyPipe{Id: "p1", SourceContract: "nope", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b"}, CodeNotFound, "contract nope"},
		{"unknown dest org", ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-z", DestinationSubchain: "chain-org-b"}, CodeNotFound, "org-z"},
		{"subchain of other org", ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-c", DestinationSubchain: "chain-org-b"}, CodeInvalid, "belongs to org org-b"},
		{"same subchain", ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-a", DestinationSubchain: "chain-org-a"}, CodeInvalid, "both subchain"},
		{"payload too big", ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b", Limits: &PipeLimits{MaxPayload: 1 << 30}}, CodeInvalid, "max payload"},
		{"bad mode", ga, &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b", Mode: 9}, CodeInvalid, "consistency mode"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}

	c.ok(ga, apply)
	c.rejected(ga, apply, CodeExists, "already exists")
	p := &Pipe{}
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_PROPOSED || p.Mode != ConsistencyMode_MODE_STRICT || p.Limits.MaxPayload != defaultPayload {
		t.Fatalf("applied pipe: %v", p)
	}
	if string(p.Source.PublicKey) != string(crypto.DevSigner("cc-org-a").PublicKey()) || p.Source.RelayId != "relay-org-a" {
		t.Fatalf("source endpoint: %v", p.Source)
	}
	c.rejected(ga, &MsgSuspendPipe{Id: "p1"}, CodeBadState, "pipe p1: destination org org-b has not authorized it")
	c.rejected(ga, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"}, CodeUnauthorized, "only its destination org org-b")
	c.rejected(gb, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-a"}, CodeInvalid, "the pipe goes to subchain chain-org-b")
	c.rejected(gb, &MsgAuthorizePipe{Id: "nope", DestinationContract: "ct-org-b"}, CodeNotFound, "does not exist")
	c.ok(gb, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"})
	c.rejected(gb, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"}, CodeBadState, "is active, not proposed")
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_ACTIVE || string(p.Destination.PublicKey) != string(crypto.DevSigner("cc-org-b").PublicKey()) || p.Destination.Contract != "ct-org-b" {
		t.Fatalf("authorized pipe: %v", p)
	}

	// org-d is a member but neither end nor a genesis governor.
	d := crypto.DevSigner("org-d-admin")
	c.passVote(proposalID(t, c.ok(d, &MsgApplyOrg{Id: "org-d", Name: "D"})))
	c.rejected(d, &MsgSuspendPipe{Id: "p1"}, CodeUnauthorized, "neither end")
	c.rejected(gb, &MsgResumePipe{Id: "p1"}, CodeBadState, "not suspended")
	c.rejected(gb, &MsgSuspendPipe{Id: "p1", Reason: strings.Repeat("r", 300)}, CodeInvalid, "reason")
	c.ok(gcc, &MsgSuspendPipe{Id: "p1", Reason: "audit"}) // a genesis governor may suspend any pipe
	c.rejected(gb, &MsgSuspendPipe{Id: "p1"}, CodeBadState, "already suspended")
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_SUSPENDED || p.StatusReason != "audit" {
		t.Fatalf("suspended pipe: %v", p)
	}
	c.ok(gb, &MsgResumePipe{Id: "p1"})
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_ACTIVE {
		t.Fatalf("resumed pipe: %v", p)
	}
}

func TestValidatorAndAuditNodes(t *testing.T) {
	c := newMemChain(t)
	audit := strings.Repeat("0a", 20)
	c.ok(gov("org-a"), &MsgRegisterNode{Id: audit, Kind: NodeKind_NODE_AUDIT, P2PAddress: "127.0.0.1:1"})
	c.rejected(gov("org-a"), &MsgRegisterNode{Id: audit, Kind: NodeKind_NODE_AUDIT}, CodeExists, "already registered")
	n := &Node{}
	c.get(KeyNode(audit), n)
	if n.Status != NodeStatus_NODE_ACTIVE || n.Power != 0 {
		t.Fatalf("audit node: %v", n)
	}
	val := strings.Repeat("0b", 20)
	key := crypto.DevSigner("val").PublicKey()
	id := proposalID(t, c.ok(gov("org-a"), &MsgRegisterNode{Id: val, Kind: NodeKind_NODE_GOVERNANCE, ConsensusPubKey: key}))
	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
	c.ok(gov("org-b"), &MsgVote{ProposalId: id, Approve: true})
	resp := c.block(c.tx(gov("org-c"), &MsgVote{ProposalId: id, Approve: true}))
	if len(resp.ValidatorUpdates) != 1 || resp.ValidatorUpdates[0].Power != 10 || string(resp.ValidatorUpdates[0].PubKeyBytes) != string(key) {
		t.Fatalf("validator updates: %v", resp.ValidatorUpdates)
	}
}

func TestDeterministicAndRestart(t *testing.T) {
	dir := t.TempDir()
	disk, err := NewApp(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := NewInMemoryApp(nil)
	c1 := newChain(t, disk, genesisFor("org-a", "org-b", "org-c"))
	c2 := newChain(t, mem, genesisFor("org-a", "org-b", "org-c"))
	c1.consortium()
	// Replay c1's blocks on c2 by rebuilding with the same signers and nonces.
	c2.consortium()
	if h1, h2 := disk.tree.Hash(), mem.tree.Hash(); string(h1) != string(h2) || len(h1) != 32 {
		t.Fatalf("app hashes differ: %x vs %x", h1, h2)
	}
	hash, height := disk.tree.Hash(), disk.tree.Version()
	if err := disk.Close(); err != nil {
		t.Fatal(err)
	}
	re, err := NewApp(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { re.Close() })
	info, _ := re.Info(context.Background(), &abci.InfoRequest{})
	if info.LastBlockHeight != height || string(info.LastBlockAppHash) != string(hash) {
		t.Fatalf("after restart: height %d hash %x, want %d %x", info.LastBlockHeight, info.LastBlockAppHash, height, hash)
	}
	if re.ChainID() != testChain || re.Params().QuorumDen != 3 {
		t.Fatal("metadata lost on restart")
	}
}

func TestInitChainRejectsBadGenesis(t *testing.T) {
	for name, gs := range map[string]*GenesisState{
		"no orgs":     {},
		"bad quorum":  {Params: &Params{QuorumNum: 3, QuorumDen: 3, VotingPeriod: 1}, Orgs: []*GenesisOrg{{Id: "a"}}},
		"bad org id":  {Orgs: []*GenesisOrg{{Id: "A B"}}},
		"dup org":     {Orgs: []*GenesisOrg{{Id: "a"}, {Id: "a"}}},
		"unknown org": {Orgs: []*GenesisOrg{{Id: "a"}}, Accounts: []*GenesisAccount{{Org: "b", Role: Role_ROLE_GOVERNOR, Suite: "ed25519", PublicKey: make([]byte, 32)}}},
		"bad key":     {Orgs: []*GenesisOrg{{Id: "a"}}, Accounts: []*GenesisAccount{{Org: "a", Role: Role_ROLE_GOVERNOR, Suite: "ed25519", PublicKey: []byte{1}}}},
	} {
		t.Run(name, func(t *testing.T) {
			app, _ := NewInMemoryApp(nil)
			raw, _ := EncodeGenesisState(gs)
			if _, err := app.InitChain(context.Background(), &abci.InitChainRequest{ChainId: "x", AppStateBytes: raw}); err == nil {
				t.Fatal("bad genesis accepted")
			}
		})
	}
	app, _ := NewInMemoryApp(nil)
	if _, err := app.InitChain(context.Background(), &abci.InitChainRequest{ChainId: "x", AppStateBytes: []byte("{not json")}); err == nil {
		t.Fatal("malformed app_state accepted")
	}
}

func TestQueryPaths(t *testing.T) {
	c := newMemChain(t)
	c.consortium()
	q := func(path string, data []byte) *abci.QueryResponse {
		r, err := c.app.Query(context.Background(), &abci.QueryRequest{Path: path, Data: data, Prove: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := q(QueryKey, KeyOrg("org-a")); r.Code != CodeOK || r.ProofOps == nil || len(r.Value) == 0 {
		t.Fatalf("org query: %v", r)
	}
	if r := q(QueryKey, KeyOrg("nope")); r.Code != CodeNotFound || r.ProofOps == nil {
		t.Fatalf("missing org query must say so with an absence proof: %v", r)
	}
	r := q(QueryList, listReq(ListOrgs, nil, 0))
	var lr ListResult
	if err := proto.Unmarshal(r.Value, &lr); err != nil || len(lr.Items) != 3 {
		t.Fatalf("list orgs: %v %v", lr.Items, err)
	}
	if r := q("/nope", nil); r.Code != CodeInvalid {
		t.Fatalf("unknown path: %v", r)
	}
	if r := q(QueryList, listReq("o", nil, 0)); r.Code != CodeInvalid {
		t.Fatalf("bad prefix: %v", r)
	}
	if r, _ := c.app.Query(context.Background(), &abci.QueryRequest{Path: QueryKey, Data: KeyOrg("org-a"), Height: 99999}); r.Code != CodeNotFound {
		t.Fatalf("unavailable height: %v", r)
	}
}

func TestErrorsIs(t *testing.T) {
	err := TxErrorFromResult(CodeNotFound, "pipe p1 does not exist")
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || err.Error() != "pipe p1 does not exist" {
		t.Fatalf("errors.Is on TxError: %v", err)
	}
	if TxErrorFromResult(CodeOK, "") != nil {
		t.Fatal("OK is not an error")
	}
}
