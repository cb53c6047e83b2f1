package govchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

func listReq(prefix string, after []byte, limit uint32) []byte {
	b, _ := proto.Marshal(&ListRequest{Prefix: prefix, After: after, Limit: limit})
	return b
}

// withPipe is the consortium plus pipe p1 from org-a to org-b, active.
func (c *chain) withPipe() {
	c.t.Helper()
	c.consortium()
	c.ok(gov("org-a"), &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b"})
	c.ok(gov("org-b"), &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"})
}

// both checks that CheckTx and FinalizeBlock reject raw alike.
func (c *chain) both(raw []byte, code uint32, want string) {
	c.t.Helper()
	ct, err := c.app.CheckTx(context.Background(), &abci.CheckTxRequest{Tx: raw})
	if err != nil {
		c.t.Fatal(err)
	}
	if ct.Code != code || !strings.Contains(ct.Log, want) {
		c.t.Fatalf("CheckTx: code %d %q, want %d containing %q", ct.Code, ct.Log, code, want)
	}
	r := c.block(raw).TxResults[0]
	if r.Code != code || !strings.Contains(r.Log, want) {
		c.t.Fatalf("FinalizeBlock: code %d %q, want %d containing %q", r.Code, r.Log, code, want)
	}
}

func (c *chain) account(s crypto.Signer) *Account {
	c.t.Helper()
	a := &Account{}
	if !c.get(KeyAccount(crypto.SignerAddress(s)), a) {
		c.t.Fatalf("no account for %s", crypto.SignerAddress(s))
	}
	return a
}

func TestRevokeAccount(t *testing.T) {
	c := newMemChain(t)
	c.withPipe()
	ccA, ccB := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-b")
	d := crypto.DevSigner("org-d-admin")
	c.passVote(proposalID(t, c.ok(d, &MsgApplyOrg{Id: "org-d", Name: "D"})))
	opA := crypto.DevSigner("op-a")
	c.admitAccount(gov("org-a"), Role_ROLE_OPERATOR, opA)

	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    *MsgRevokeAccount
		code uint32
		want string
	}{
		{"non-operator", ccA, &MsgRevokeAccount{Account: addr(ccA)}, CodeUnauthorized, "role cross-chain"},
		{"another org's account", d, &MsgRevokeAccount{Account: addr(ccA)}, CodeUnauthorized, "belongs to org org-a"},
		{"unknown account", opA, &MsgRevokeAccount{Account: addr(crypto.DevSigner("nobody"))}, CodeNotFound, "does not exist"},
		{"bad address", opA, &MsgRevokeAccount{Account: []byte{1, 2}}, CodeInvalid, "account"},
		{"long reason", opA, &MsgRevokeAccount{Account: addr(ccA), Reason: strings.Repeat("r", 300)}, CodeInvalid, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}

	// An operator of the account's own org revokes it at once.
	r := c.ok(opA, &MsgRevokeAccount{Account: addr(ccA), Reason: "key leaked"})
	h := uint64(c.height)
	a := c.account(ccA)
	if a.Status != AccountStatus_ACCOUNT_REVOKED || a.RevokedHeight != h || a.StatusReason != "key leaked" {
		t.Fatalf("revoked account: %v", a)
	}
	p := &Pipe{}
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_SUSPENDED || p.StatusReason != "account revoked" {
		t.Fatalf("pipe whose source account is revoked: %v", p)
	}
	svc := &Service{}
	c.get(KeyService("relay-org-a"), svc)
	if svc.Status != ServiceStatus_SERVICE_REVOKED || svc.RevokedHeight != h {
		t.Fatalf("service of a revoked account: %v", svc)
	}
	if !hasEvent(r, "service", "status", "revoked") || !hasEvent(r, "pipe", "status", "suspended") {
		t.Fatalf("events: %v", r.Events)
	}
	// A revoked account sends nothing, in CheckTx and in a block alike.
	c.both(c.tx(ccA, &MsgConfirmBatches{}), CodeRevoked, "revoked at height")
	c.rejected(opA, &MsgRevokeAccount{Account: addr(ccA)}, CodeBadState, "already revoked")
	c.rejected(gov("org-b"), &MsgResumePipe{Id: "p1"}, CodeBadState, "not active")
	c.rejected(gov("org-a"), &MsgRegisterApp{Id: "app-x", Subchain: "chain-org-a", Account: addr(ccA)}, CodeBadState, "not active")

	// Another org's account: a genesis governor proposes, the orgs vote.
	id := proposalID(t, c.ok(gov("org-a"), &MsgRevokeAccount{Account: addr(ccB), Reason: "misbehaves"}))
	prop := &Proposal{}
	c.get(KeyProposal(id), prop)
	if prop.Kind != ProposalKind_PROPOSAL_REVOKE_ACCOUNT || prop.Reason != "misbehaves" {
		t.Fatalf("revoke proposal: %v", prop)
	}
	if c.account(ccB).Status != AccountStatus_ACCOUNT_ACTIVE {
		t.Fatal("revoked before the vote")
	}
	c.passVote(id)
	if b := c.account(ccB); b.Status != AccountStatus_ACCOUNT_REVOKED || b.StatusReason != "misbehaves" {
		t.Fatalf("account after the vote: %v", b)
	}
	c.get(KeyService("relay-org-b"), svc)
	if svc.Status != ServiceStatus_SERVICE_REVOKED {
		t.Fatalf("service after the vote: %v", svc)
	}

	// A pending account revoked before its vote is never admitted.
	pending := crypto.DevSigner("pending-a")
	id = proposalID(t, c.ok(gov("org-a"), &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: pending.PublicKey()}))
	c.ok(opA, &MsgRevokeAccount{Account: addr(pending)})
	for _, o := range []string{"org-a", "org-b", "org-c"} {
		c.ok(gov(o), &MsgVote{ProposalId: id, Approve: true})
	}
	if st := c.account(pending).Status; st != AccountStatus_ACCOUNT_REVOKED {
		t.Fatalf("a vote brought a revoked account back: %v", st)
	}
}

func hasEvent(r *abci.ExecTxResult, typ, key, value string) bool {
	for _, e := range r.Events {
		if e.Type != typ {
			continue
		}
		for _, a := range e.Attributes {
			if a.Key == key && a.Value == value {
				return true
			}
		}
	}
	return false
}

func TestExpelOrg(t *testing.T) {
	c := newMemChain(t)
	c.withPipe()
	d := crypto.DevSigner("org-d-admin")
	c.passVote(proposalID(t, c.ok(d, &MsgApplyOrg{Id: "org-d", Name: "D"})))

	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    *MsgProposeExpelOrg
		code uint32
		want string
	}{
		{"not a genesis org", d, &MsgProposeExpelOrg{Org: "org-a"}, CodeUnauthorized, "role operator"},
		{"not a governor", crypto.DevSigner("cc-org-a"), &MsgProposeExpelOrg{Org: "org-d"}, CodeUnauthorized, "role cross-chain"},
		{"unknown org", gov("org-a"), &MsgProposeExpelOrg{Org: "org-z"}, CodeNotFound, "does not exist"},
		{"long reason", gov("org-a"), &MsgProposeExpelOrg{Org: "org-d", Reason: strings.Repeat("r", 300)}, CodeInvalid, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}

	// A member org, expelled by vote.
	id := proposalID(t, c.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-d", Reason: "fraud"}))
	c.passVote(id)
	org := &Org{}
	c.get(KeyOrg("org-d"), org)
	if org.Status != OrgStatus_ORG_EXPELLED || org.ExpelledHeight != uint64(c.height) {
		t.Fatalf("expelled org: %v", org)
	}
	if a := c.account(d); a.Status != AccountStatus_ACCOUNT_REVOKED || a.StatusReason != "org expelled" {
		t.Fatalf("account of an expelled org: %v", a)
	}
	c.both(c.tx(d, &MsgResumePipe{Id: "p1"}), CodeRevoked, "revoked")
	c.rejected(gov("org-a"), &MsgProposeExpelOrg{Org: "org-d"}, CodeBadState, "not an active member")

	// A genesis org: it does not vote on its own expulsion, and the
	// electorate shrinks so the others decide alone.
	open := proposalID(t, c.ok(crypto.DevSigner("y-admin"), &MsgApplyOrg{Id: "org-y", Name: "Y"}))
	c.ok(gov("org-a"), &MsgVote{ProposalId: open, Approve: true})
	c.ok(gov("org-b"), &MsgVote{ProposalId: open, Approve: true})

	id = proposalID(t, c.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-b"}))
	prop := &Proposal{}
	c.get(KeyProposal(id), prop)
	if prop.Electorate != 2 {
		t.Fatalf("electorate of a genesis org's expulsion: %d, want 2 (the subject does not vote)", prop.Electorate)
	}
	c.rejected(gov("org-b"), &MsgVote{ProposalId: id, Approve: false}, CodeUnauthorized, "its own expulsion")
	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
	c.ok(gov("org-c"), &MsgVote{ProposalId: id, Approve: true})
	c.get(KeyProposal(id), prop)
	if prop.Status != ProposalStatus_PROPOSAL_PASSED {
		t.Fatalf("2 of the 2 remaining genesis orgs: %v", prop.Status)
	}
	c.get(KeyOrg("org-b"), org)
	if org.Status != OrgStatus_ORG_EXPELLED {
		t.Fatalf("org-b: %v", org.Status)
	}
	p := &Pipe{}
	c.get(KeyPipe("p1"), p)
	if p.Status != PipeStatus_PIPE_SUSPENDED || p.StatusReason != "org expelled" {
		t.Fatalf("pipe into an expelled org: %v", p)
	}
	svc := &Service{}
	c.get(KeyService("relay-org-b"), svc)
	if svc.Status != ServiceStatus_SERVICE_REVOKED {
		t.Fatalf("service of an expelled org: %v", svc)
	}
	if a := c.account(crypto.DevSigner("cc-org-b")); a.Status != AccountStatus_ACCOUNT_REVOKED {
		t.Fatalf("cross-chain account of an expelled org: %v", a.Status)
	}
	if n, _ := counter(c.app.committed, []byte(keyElectorate)); n != 2 {
		t.Fatalf("electorate after a genesis org's expulsion: %d", n)
	}
	// The open proposal was recounted: org-b's vote dropped, 1 yes of 2.
	c.get(KeyProposal(open), prop)
	if prop.Electorate != 2 || len(prop.Votes) != 1 || prop.Status != ProposalStatus_PROPOSAL_VOTING {
		t.Fatalf("open proposal after the expulsion: %v", prop)
	}
	c.ok(gov("org-c"), &MsgVote{ProposalId: open, Approve: true})
	c.get(KeyProposal(open), prop)
	if prop.Status != ProposalStatus_PROPOSAL_PASSED {
		t.Fatalf("2 of 2 remaining: %v", prop.Status)
	}
	// New proposals count the two remaining genesis orgs.
	id = proposalID(t, c.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-y"}))
	c.get(KeyProposal(id), prop)
	if prop.Electorate != 2 {
		t.Fatalf("electorate after: %d", prop.Electorate)
	}

	// The last genesis org is never expelled: nobody would be left to vote.
	two, _ := NewInMemoryApp(nil)
	c2 := newChain(t, two, genesisFor("org-a", "org-b"))
	id = proposalID(t, c2.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-b"}))
	c2.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true}) // 1 of an electorate of 1
	c2.get(KeyOrg("org-b"), org)
	if org.Status != OrgStatus_ORG_EXPELLED {
		t.Fatalf("org-b of two: %v", org.Status)
	}
	c2.rejected(gov("org-a"), &MsgProposeExpelOrg{Org: "org-a"}, CodeInvalid, "last genesis org")
}

// txAs signs m with s for account acct (a rotated account names itself).
func (c *chain) txAs(s crypto.Signer, acct []byte, m proto.Message) []byte {
	c.t.Helper()
	a, _ := crypto.AddressFromBytes(acct)
	c.nonces[a]++
	b := Wrap(m)
	b.Account = acct
	raw, err := NewTx(s, testChain, c.nonces[a], b)
	if err != nil {
		c.t.Fatal(err)
	}
	return raw
}

// rotation is the rotate-key message for account acct moving to next, as
// signed for the account's next nonce.
func (c *chain) rotation(acct []byte, next crypto.Signer) *MsgRotateKey {
	c.t.Helper()
	a, _ := crypto.AddressFromBytes(acct)
	m, err := NewRotateKey(testChain, a, c.nonces[a]+1, next)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func TestNewCodesErrorsIs(t *testing.T) {
	for _, tc := range []struct {
		code     uint32
		sentinel error
	}{{CodeStaleKey, ErrStaleKey}, {CodeRevoked, ErrRevoked}, {CodeLimit, ErrLimit}} {
		if err := TxErrorFromResult(tc.code, "x"); !errors.Is(err, tc.sentinel) || errors.Is(err, ErrBadSignature) {
			t.Fatalf("code %d: errors.Is does not match its sentinel", tc.code)
		}
	}
}

// A rotation statement changes with every field it names.
func TestRotationStatementBindsEveryField(t *testing.T) {
	a, b := crypto.SignerAddress(crypto.DevSigner("a")), crypto.SignerAddress(crypto.DevSigner("b"))
	base := RotationStatement("c", a, "ed25519", []byte{1, 2}, 7)
	for name, other := range map[string][]byte{
		"chain":   RotationStatement("d", a, "ed25519", []byte{1, 2}, 7),
		"account": RotationStatement("c", b, "ed25519", []byte{1, 2}, 7),
		"suite":   RotationStatement("c", a, "ed448", []byte{1, 2}, 7),
		"key":     RotationStatement("c", a, "ed25519", []byte{1, 3}, 7),
		"nonce":   RotationStatement("c", a, "ed25519", []byte{1, 2}, 8),
		"shifted": RotationStatement("c", a, "ed2551", []byte{9, 1, 2}, 7),
	} {
		if bytes.Equal(base, other) {
			t.Fatalf("%s does not change the statement", name)
		}
	}
	if !bytes.HasPrefix(base, []byte(rotateDomain)) || bytes.HasPrefix(base, []byte(signDomain)) {
		t.Fatal("rotation statements must carry their own domain tag")
	}
}

func TestRotateKey(t *testing.T) {
	c := newMemChain(t)
	c.withPipe()
	old, next := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-a-2")
	acct := addr(old)

	oldAddr := crypto.SignerAddress(old)
	// Each bad rotation differs from a good one in one respect; built when
	// sent, so the statement's nonce is the tx's unless the case says not.
	signed := func(s crypto.Signer, chainID string, nonceDelta uint64) func() *MsgRotateKey {
		return func() *MsgRotateKey {
			sig, _ := s.Sign(RotationStatement(chainID, oldAddr, "ed25519", next.PublicKey(), c.nonces[oldAddr]+1+nonceDelta))
			return &MsgRotateKey{NewSuite: "ed25519", NewPublicKey: next.PublicKey(), NewSignature: sig}
		}
	}
	fixed := func(m *MsgRotateKey) func() *MsgRotateKey { return func() *MsgRotateKey { return m } }
	for _, tc := range []struct {
		name string
		m    func() *MsgRotateKey
		code uint32
		want string
	}{
		{"wrong new-key signature", signed(crypto.DevSigner("mallory"), testChain, 0), CodeBadSignature, "does not verify"},
		{"signature for another nonce", signed(next, testChain, 1), CodeBadSignature, "does not verify"},
		{"signature for another chain", signed(next, "other", 0), CodeBadSignature, "does not verify"},
		{"bad new key", fixed(&MsgRotateKey{NewSuite: "ed25519", NewPublicKey: []byte{1}, NewSignature: []byte{1}}), CodeInvalid, "new key"},
		{"no signature", fixed(&MsgRotateKey{NewSuite: "ed25519", NewPublicKey: next.PublicKey()}), CodeInvalid, "signature"},
		{"same key", func() *MsgRotateKey { return c.rotation(acct, old) }, CodeInvalid, "already"},
		{"another account's key", func() *MsgRotateKey { return c.rotation(acct, crypto.DevSigner("cc-org-b")) }, CodeExists, "account"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(old, tc.m(), tc.code, tc.want) })
	}
	// The good statement verifies: only the case's one difference failed.
	if good := signed(next, testChain, 0)(); crypto.Verify(crypto.SuiteEd25519, next.PublicKey(),
		RotationStatement(testChain, oldAddr, "ed25519", next.PublicKey(), c.nonces[oldAddr]+1), good.NewSignature) != nil {
		t.Fatal("the good rotation statement does not verify")
	}

	rot := c.tx(old, c.rotation(acct, next))
	if r := c.block(rot).TxResults[0]; r.Code != CodeOK {
		t.Fatalf("rotation: %d %s", r.Code, r.Log)
	}
	h := uint64(c.height)
	a := c.account(old)
	if !bytes.Equal(a.Address, acct) || !bytes.Equal(a.PublicKey, next.PublicKey()) || a.KeyHeight != h ||
		len(a.PreviousKeys) != 1 || !bytes.Equal(a.PreviousKeys[0].PublicKey, old.PublicKey()) || a.PreviousKeys[0].UntilHeight != h {
		t.Fatalf("rotated account: %v", a)
	}
	p := &Pipe{}
	c.get(KeyPipe("p1"), p)
	if !bytes.Equal(p.Source.PublicKey, next.PublicKey()) || p.Status != PipeStatus_PIPE_ACTIVE {
		t.Fatalf("pipe endpoint after rotation: %v", p.Source)
	}
	if owner, ok, _ := keyOwner(c.app.committed, crypto.SignerAddress(next)); !ok || !bytes.Equal(owner[:], acct) {
		t.Fatalf("alias of the new key: %v %v", owner, ok)
	}

	// From now on: the old key is refused, the new key names the account.
	c.both(rot, CodeStaleKey, "rotated this key away") // replay
	c.both(c.tx(old, &MsgConfirmBatches{}), CodeStaleKey, "rotated this key away")
	c.both(c.txAs(old, acct, &MsgConfirmBatches{}), CodeStaleKey, "rotated this key away")
	c.both(c.tx(next, &MsgConfirmBatches{}), CodeUnknownSender, "name that account")
	if r := c.block(c.txAs(next, acct, &MsgSuspendPipe{Id: "p1"})).TxResults[0]; r.Code != CodeUnauthorized || !strings.Contains(r.Log, "role cross-chain") {
		t.Fatalf("new key, account named: the sender must be accepted (and its role judged): %d %s", r.Code, r.Log)
	}
	// A replayed tx of the new key is a nonce replay.
	again := c.txAs(next, acct, &MsgConfirmBatches{})
	c.block(again)
	c.both(again, CodeBadNonce, "replayed")

	// No key serves two accounts, nor comes back.
	third := crypto.DevSigner("cc-org-a-3")
	back := c.rotation(acct, old)
	c.rejected2(next, acct, back, CodeExists, "account")
	c.rejected(gov("org-b"), &MsgProposeAccount{Role: Role_ROLE_OPERATOR, Suite: "ed25519", PublicKey: next.PublicKey()}, CodeExists, "a key serves one account")
	c.rejected(next, &MsgApplyOrg{Id: "org-n", Name: "N"}, CodeExists, "needs a new key")
	if r := c.block(c.txAs(next, acct, c.rotation(acct, third))).TxResults[0]; r.Code != CodeOK {
		t.Fatalf("second rotation: %d %s", r.Code, r.Log)
	}
	c.rejected2(third, acct, c.rotation(acct, next), CodeExists, "already rotated onto")
	if a := c.account(old); len(a.PreviousKeys) != 2 || !bytes.Equal(a.PublicKey, third.PublicKey()) {
		t.Fatalf("after the second rotation: %v", a)
	}
}

// rejected2 is rejected for a tx that names its account.
func (c *chain) rejected2(s crypto.Signer, acct []byte, m proto.Message, code uint32, want string) {
	c.t.Helper()
	r := c.block(c.txAs(s, acct, m)).TxResults[0]
	if r.Code != code || !strings.Contains(r.Log, want) {
		c.t.Fatalf("%T: got code %d %q, want code %d containing %q", m, r.Code, r.Log, code, want)
	}
}

func TestUpdateService(t *testing.T) {
	c := newMemChain(t)
	c.consortium()
	fp2 := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    *MsgUpdateService
		code uint32
		want string
	}{
		{"another org", gov("org-b"), &MsgUpdateService{RelayId: "relay-org-a", Address: "127.0.0.1:9", TlsCertSha256: fp2}, CodeUnauthorized, "only its own org"},
		{"missing fingerprint", gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "127.0.0.1:9"}, CodeInvalid, "TLS fingerprint must be"},
		{"short fingerprint", gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "127.0.0.1:9", TlsCertSha256: fp2[:31]}, CodeInvalid, "31 bytes"},
		{"bad address", gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "nowhere", TlsCertSha256: fp2}, CodeInvalid, "host:port"},
		{"unknown relay", gov("org-a"), &MsgUpdateService{RelayId: "relay-z", Address: "127.0.0.1:9", TlsCertSha256: fp2}, CodeNotFound, "not registered"},
		{"cross-chain account", crypto.DevSigner("cc-org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "127.0.0.1:9", TlsCertSha256: fp2}, CodeUnauthorized, "role cross-chain"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}
	c.ok(gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "10.0.0.1:7100", TlsCertSha256: fp2})
	s := &Service{}
	c.get(KeyService("relay-org-a"), s)
	if s.Address != "10.0.0.1:7100" || !bytes.Equal(s.TlsCertSha256, fp2) || s.UpdatedHeight != uint64(c.height) || s.Status != ServiceStatus_SERVICE_ACTIVE {
		t.Fatalf("updated service: %v", s)
	}
	c.ok(gov("org-a"), &MsgRevokeAccount{Account: addr(crypto.DevSigner("cc-org-a"))})
	c.rejected(gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "10.0.0.1:7100", TlsCertSha256: fp2}, CodeBadState, "revoked")
}

func TestApplicationBounds(t *testing.T) {
	app, _ := NewInMemoryApp(nil)
	gs := genesisFor("org-a", "org-b", "org-c")
	gs.Params.MaxOpenApplications = 2
	c := newChain(t, app, gs)
	x1, x2, x3 := crypto.DevSigner("x1"), crypto.DevSigner("x2"), crypto.DevSigner("x3")
	id1 := proposalID(t, c.ok(x1, &MsgApplyOrg{Id: "org-x1", Name: "X1"}))
	c.ok(x2, &MsgApplyOrg{Id: "org-x2", Name: "X2"})
	c.rejected(x3, &MsgApplyOrg{Id: "org-x3", Name: "X3"}, CodeLimit, "max_open_applications")
	c.rejected(x1, &MsgApplyOrg{Id: "org-x9", Name: "X9"}, CodeLimit, "max_applications_per_applicant")
	// A decided application stops counting, and its refused key may apply again.
	c.ok(gov("org-a"), &MsgVote{ProposalId: id1, Approve: false})
	c.ok(x3, &MsgApplyOrg{Id: "org-x3", Name: "X3"})
	c.rejected(x1, &MsgApplyOrg{Id: "org-x1b", Name: "X1"}, CodeLimit, "max_open_applications")
	// An expired one too.
	for i := 0; i < 21; i++ {
		c.block()
	}
	if n, _ := counter(c.app.committed, []byte(keyOpenApps)); n != 0 {
		t.Fatalf("open applications after every one expired: %d", n)
	}
	id := proposalID(t, c.ok(x1, &MsgApplyOrg{Id: "org-x1b", Name: "X1"}))
	c.passVote(id)
	if a := c.account(x1); a.Org != "org-x1b" || a.Status != AccountStatus_ACCOUNT_ACTIVE {
		t.Fatalf("re-applied key: %v", a)
	}
	// Old chains' params read as the defaults.
	if p := (&Params{}); p.openApplications() != DefaultMaxOpenApplications || p.applicationsPerApplicant() != DefaultMaxApplicationsPerApplicant {
		t.Fatal("defaults")
	}
}

func TestListPages(t *testing.T) {
	c := newMemChain(t)
	query := func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		r, err := c.app.Query(ctx, &abci.QueryRequest{Path: QueryList, Data: req})
		if err != nil {
			return 0, "", nil, err
		}
		return r.Code, r.Log, r.Value, nil
	}
	// Past the real page size: 10 000 + 37 records under one prefix.
	const n = listPageSize + 37
	for i := range n {
		k := fmt.Sprintf("%s%06d", ListOrgs, i)
		b, _ := marshal.Marshal(&Org{Id: fmt.Sprintf("t%06d", i)})
		if _, err := c.app.tree.Set([]byte(k), b); err != nil {
			t.Fatal(err)
		}
	}
	c.block()
	orgs, err := listPages(context.Background(), ListOrgs, func() *Org { return &Org{} }, query)
	if err != nil || len(orgs) != n+3 {
		t.Fatalf("listed %d orgs (%v), want %d", len(orgs), err, n+3)
	}
	for i := range n { // key order: the numbered ones, then org-a, org-b, org-c
		if want := fmt.Sprintf("t%06d", i); orgs[i].Id != want {
			t.Fatalf("org %d is %s, want %s: a page repeated or skipped", i, orgs[i].Id, want)
		}
	}
	if orgs[n].Id != "org-a" || orgs[n+2].Id != "org-c" {
		t.Fatalf("last orgs: %v", orgs[n:])
	}
	// A smaller page, set by the node and by the request.
	c.app.listPage = 7
	got, err := listPages(context.Background(), ListOrgs, func() *Org { return &Org{} }, query)
	if err != nil || len(got) != n+3 {
		t.Fatalf("pages of 7: %d %v", len(got), err)
	}
	code, _, v, _ := query(context.Background(), listReq(ListOrgs, []byte(ListOrgs+"000004"), 3))
	var lr ListResult
	if err := proto.Unmarshal(v, &lr); code != CodeOK || err != nil || len(lr.Items) != 3 || !lr.Truncated || string(lr.Items[0].Key) != ListOrgs+"000005" {
		t.Fatalf("page after a cursor: %d %v %v", code, lr.Items, err)
	}
	if code, _, _, _ := query(context.Background(), listReq(ListOrgs, []byte("p/x"), 0)); code != CodeInvalid {
		t.Fatalf("cursor outside the prefix: %d", code)
	}
	if code, _, _, _ := query(context.Background(), []byte{0xff}); code != CodeMalformed {
		t.Fatalf("garbage request: %d", code)
	}
}

// misbehaviour runs revocation, rotation and expulsion on a chain.
func misbehaviour(c *chain) {
	c.withPipe()
	old, next := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-a-2")
	c.ok(old, c.rotation(addr(old), next))
	c.ok(gov("org-a"), &MsgUpdateService{RelayId: "relay-org-a", Address: "10.0.0.1:1", TlsCertSha256: bytes.Repeat([]byte{1}, 32)})
	c.ok(gov("org-b"), &MsgRevokeAccount{Account: addr(crypto.DevSigner("cc-org-b"))})
	c.passVote(proposalID(c.t, c.ok(crypto.DevSigner("d"), &MsgApplyOrg{Id: "org-d", Name: "D"})))
	id := proposalID(c.t, c.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-c"}))
	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
	c.ok(gov("org-b"), &MsgVote{ProposalId: id, Approve: true})
}

func TestMisbehaviourDeterministic(t *testing.T) {
	a1, _ := NewInMemoryApp(nil)
	a2, _ := NewInMemoryApp(nil)
	c1 := newChain(t, a1, genesisFor("org-a", "org-b", "org-c"))
	c2 := newChain(t, a2, genesisFor("org-a", "org-b", "org-c"))
	misbehaviour(c1)
	misbehaviour(c2)
	if h1, h2 := a1.tree.Hash(), a2.tree.Hash(); !bytes.Equal(h1, h2) {
		t.Fatalf("app hashes differ: %x vs %x", h1, h2)
	}
	org := &Org{}
	c1.get(KeyOrg("org-c"), org)
	if org.Status != OrgStatus_ORG_EXPELLED {
		t.Fatalf("org-c: %v", org.Status)
	}
}

func TestExpelRemovesValidators(t *testing.T) {
	app, _ := NewInMemoryApp(nil)
	gs := genesisFor("org-a", "org-b", "org-c")
	for i, o := range []string{"org-a", "org-b", "org-c"} {
		gs.Nodes = append(gs.Nodes, &GenesisNode{Id: fmt.Sprintf("%040x", i+1), Org: o, ConsensusPubKey: crypto.DevSigner("val-" + o).PublicKey(), Power: 10})
	}
	c := newChain(t, app, gs)
	id := proposalID(t, c.ok(gov("org-a"), &MsgProposeExpelOrg{Org: "org-c"}))
	c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
	resp := c.block(c.tx(gov("org-b"), &MsgVote{ProposalId: id, Approve: true}))
	if r := resp.TxResults[0]; r.Code != CodeOK {
		t.Fatalf("vote: %d %s", r.Code, r.Log)
	}
	if len(resp.ValidatorUpdates) != 1 || resp.ValidatorUpdates[0].Power != 0 ||
		!bytes.Equal(resp.ValidatorUpdates[0].PubKeyBytes, crypto.DevSigner("val-org-c").PublicKey()) {
		t.Fatalf("validator updates of an expulsion: %v", resp.ValidatorUpdates)
	}
	n := &Node{}
	c.get(KeyNode(fmt.Sprintf("%040x", 3)), n)
	if n.Power != 0 {
		t.Fatalf("expelled org's node: %v", n)
	}

	// One key updated twice in a block: only the last update is kept.
	k1, k2 := []byte("k1"), []byte("k2")
	got := lastUpdatePerKey([]abci.ValidatorUpdate{{PubKeyType: "ed25519", PubKeyBytes: k1, Power: 10}, {PubKeyType: "ed25519", PubKeyBytes: k2, Power: 5}, {PubKeyType: "ed25519", PubKeyBytes: k1, Power: 0}})
	if len(got) != 2 || !bytes.Equal(got[0].PubKeyBytes, k1) || got[0].Power != 0 || got[1].Power != 5 {
		t.Fatalf("deduplicated updates: %v", got)
	}
}
