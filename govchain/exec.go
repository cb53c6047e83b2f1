package govchain

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strings"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cosmos/iavl"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Bounds on fields, so that no tx can grow the state without limit.
const (
	maxNameLen      = 128
	maxAddressLen   = 256
	maxReasonLen    = 256
	maxPipePayload  = 1 << 20
	defaultPayload  = 64 << 10
	consensusKeyLen = 32
)

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func validID(what, id string) *TxError {
	if !idRE.MatchString(id) {
		return reject(CodeInvalid, "%s id %q: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", what, id)
	}
	return nil
}

// execCtx is one tx's view of the chain: the state through an overlay, the
// block height, and the verified sender.
type execCtx struct {
	st         *overlay
	base       *iavl.MutableTree // for range scans; reads go through st
	height     uint64
	params     *Params
	sender     *Account // nil only for MsgApplyOrg from a new key
	senderAddr crypto.Address
	suite      string
	pubKey     []byte
	nonce      uint64
	events     []abci.Event
	valUpdates []abci.ValidatorUpdate
}

func (x *execCtx) emit(kind string, attrs ...string) {
	ev := abci.Event{Type: kind}
	for i := 0; i+1 < len(attrs); i += 2 {
		ev.Attributes = append(ev.Attributes, abci.EventAttribute{Key: attrs[i], Value: attrs[i+1], Index: true})
	}
	x.events = append(x.events, ev)
}

// deliver runs one message. It returns a rejection or nil; an infrastructure
// failure is returned as a plain error in err.
func (x *execCtx) deliver(body *TxBody) (rej *TxError, err error) {
	switch m := body.Msg.(type) {
	case *TxBody_ApplyOrg:
		return x.applyOrg(m.ApplyOrg)
	case *TxBody_Vote:
		return x.vote(m.Vote)
	case *TxBody_ProposeAccount:
		return x.proposeAccount(m.ProposeAccount)
	case *TxBody_RegisterNode:
		return x.registerNode(m.RegisterNode)
	case *TxBody_RegisterService:
		return x.registerService(m.RegisterService)
	case *TxBody_RegisterSubchain:
		return x.registerSubchain(m.RegisterSubchain)
	case *TxBody_RegisterApp:
		return x.registerApp(m.RegisterApp)
	case *TxBody_RegisterContract:
		return x.registerContract(m.RegisterContract)
	case *TxBody_ApplyPipe:
		return x.applyPipe(m.ApplyPipe)
	case *TxBody_AuthorizePipe:
		return x.authorizePipe(m.AuthorizePipe)
	case *TxBody_SuspendPipe:
		return x.suspendPipe(m.SuspendPipe)
	case *TxBody_ResumePipe:
		return x.resumePipe(m.ResumePipe)
	case *TxBody_ProposePipeMode:
		return x.proposePipeMode(m.ProposePipeMode)
	case *TxBody_OpenBatches:
		return x.openBatches(m.OpenBatches)
	case *TxBody_AnchorReceipts:
		return x.anchorReceipts(m.AnchorReceipts)
	case *TxBody_ConfirmBatches:
		return x.confirmBatches(m.ConfirmBatches)
	case *TxBody_TxException:
		return x.txException(m.TxException)
	case *TxBody_Resolve:
		return x.resolve(m.Resolve)
	default:
		return reject(CodeMalformed, "tx carries no known message"), nil
	}
}

// msgName names a message in rejections ("register-service").
func msgName(body *TxBody) string {
	switch body.Msg.(type) {
	case *TxBody_ApplyOrg:
		return "apply-org"
	case *TxBody_Vote:
		return "vote"
	case *TxBody_ProposeAccount:
		return "propose-account"
	case *TxBody_RegisterNode:
		return "register-node"
	case *TxBody_RegisterService:
		return "register-service"
	case *TxBody_RegisterSubchain:
		return "register-subchain"
	case *TxBody_RegisterApp:
		return "register-app"
	case *TxBody_RegisterContract:
		return "register-contract"
	case *TxBody_ApplyPipe:
		return "apply-pipe"
	case *TxBody_AuthorizePipe:
		return "authorize-pipe"
	case *TxBody_SuspendPipe:
		return "suspend-pipe"
	case *TxBody_ResumePipe:
		return "resume-pipe"
	case *TxBody_ProposePipeMode:
		return "propose-pipe-mode"
	case *TxBody_OpenBatches:
		return "open-batches"
	case *TxBody_AnchorReceipts:
		return "anchor-receipts"
	case *TxBody_ConfirmBatches:
		return "confirm-batches"
	case *TxBody_TxException:
		return "tx-exception"
	case *TxBody_Resolve:
		return "resolve"
	}
	return "unknown"
}

// requireRole checks that the sender holds one of roles in an active org.
func (x *execCtx) requireRole(action string, roles ...Role) (*Org, *TxError, error) {
	for _, r := range roles {
		if x.sender.Role == r {
			org := &Org{}
			found, err := load(x.st, KeyOrg(x.sender.Org), org)
			if err != nil {
				return nil, nil, err
			}
			if !found || org.Status != OrgStatus_ORG_ACTIVE {
				return nil, reject(CodeUnauthorized, "%s: org %s of account %s is not an active member", action, x.sender.Org, x.senderAddr), nil
			}
			return org, nil, nil
		}
	}
	return nil, reject(CodeUnauthorized, "%s: account %s has role %s, which may not do this", action, x.senderAddr, roleName(x.sender.Role)), nil
}

func roleName(r Role) string {
	switch r {
	case Role_ROLE_GOVERNOR:
		return "governor"
	case Role_ROLE_OPERATOR:
		return "operator"
	case Role_ROLE_CROSSCHAIN:
		return "cross-chain"
	case Role_ROLE_AUDITOR:
		return "auditor"
	}
	return "unspecified"
}

// ---- orgs, accounts, proposals ----

func (x *execCtx) applyOrg(m *MsgApplyOrg) (*TxError, error) {
	if x.sender != nil {
		return reject(CodeInvalid, "apply-org: account %s already belongs to org %s; an application is signed by the applicant's new key", x.senderAddr, x.sender.Org), nil
	}
	if r := validID("org", m.Id); r != nil {
		return r, nil
	}
	if len(m.Name) == 0 || len(m.Name) > maxNameLen || len(m.AccountName) > maxNameLen {
		return reject(CodeInvalid, "apply-org %s: name must be 1-%d bytes", m.Id, maxNameLen), nil
	}
	if found, err := load(x.st, KeyOrg(m.Id), &Org{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "apply-org: org %s already exists", m.Id), nil
	}
	if err := x.st.put(KeyOrg(m.Id), &Org{Id: m.Id, Name: m.Name, Status: OrgStatus_ORG_PENDING, SinceHeight: x.height}); err != nil {
		return nil, err
	}
	acct := &Account{Address: x.senderAddr[:], Org: m.Id, Role: Role_ROLE_OPERATOR, Suite: x.suite,
		PublicKey: x.pubKey, Status: AccountStatus_ACCOUNT_PENDING, Nonce: x.nonce, Name: m.AccountName}
	if err := x.st.put(KeyAccount(x.senderAddr), acct); err != nil {
		return nil, err
	}
	return x.propose(ProposalKind_PROPOSAL_ADMIT_ORG, m.Id, m.Id)
}

func (x *execCtx) propose(kind ProposalKind, subject, proposerOrg string) (*TxError, error) {
	next, err := x.st.Get([]byte(keyNextProp))
	if err != nil {
		return nil, err
	}
	id := uint64(1)
	if len(next) == 8 {
		id = beUint64(next)
	}
	x.st.set([]byte(keyNextProp), be64(id+1))
	electorate, err := x.genesisOrgs()
	if err != nil {
		return nil, err
	}
	p := &Proposal{Id: id, Kind: kind, Subject: subject, ProposerOrg: proposerOrg, Proposer: x.senderAddr[:],
		CreatedHeight: x.height, DeadlineHeight: x.height + x.params.VotingPeriod, Status: ProposalStatus_PROPOSAL_VOTING,
		Electorate: electorate, QuorumNum: x.params.QuorumNum, QuorumDen: x.params.QuorumDen}
	if err := x.st.put(KeyProposal(id), p); err != nil {
		return nil, err
	}
	x.st.set(keyOpenProp(p.DeadlineHeight, id), []byte{1})
	x.emit("proposal", "id", fmt.Sprint(id), "kind", kindName(kind), "subject", subject)
	return nil, nil
}

func kindName(k ProposalKind) string {
	switch k {
	case ProposalKind_PROPOSAL_ADMIT_ORG:
		return "admit-org"
	case ProposalKind_PROPOSAL_ADD_ACCOUNT:
		return "add-account"
	case ProposalKind_PROPOSAL_ADD_VALIDATOR:
		return "add-validator"
	case ProposalKind_PROPOSAL_PIPE_MODE:
		return "pipe-mode"
	}
	return "unspecified"
}

// genesisOrgs counts the electorate: active genesis orgs. Kept as a counter
// would be faster, but the set is small and this cannot drift.
func (x *execCtx) genesisOrgs() (uint32, error) {
	b, err := x.st.Get([]byte(keyElectorate))
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("state: electorate counter missing")
	}
	return uint32(beUint64(b)), nil
}

const keyElectorate = "E"

func (x *execCtx) vote(m *MsgVote) (*TxError, error) {
	org, r, err := x.requireRole("vote", Role_ROLE_GOVERNOR)
	if r != nil || err != nil {
		return r, err
	}
	if !org.Genesis {
		return reject(CodeUnauthorized, "vote: only genesis orgs vote; %s is not one", org.Id), nil
	}
	p := &Proposal{}
	found, err := load(x.st, KeyProposal(m.ProposalId), p)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "vote: proposal %d does not exist", m.ProposalId), nil
	}
	if p.Status != ProposalStatus_PROPOSAL_VOTING {
		return reject(CodeBadState, "vote: proposal %d is already %s", p.Id, proposalStatusName(p.Status)), nil
	}
	if x.height > p.DeadlineHeight {
		return reject(CodeExpired, "vote: proposal %d closed at height %d", p.Id, p.DeadlineHeight), nil
	}
	for _, v := range p.Votes {
		if v.Org == org.Id {
			return reject(CodeDoubleVote, "vote: org %s already voted on proposal %d", org.Id, p.Id), nil
		}
	}
	p.Votes = append(p.Votes, &Vote{Org: org.Id, Voter: x.senderAddr[:], Approve: m.Approve, Height: x.height})
	var yes, no uint64
	for _, v := range p.Votes {
		if v.Approve {
			yes++
		} else {
			no++
		}
	}
	e, num, den := uint64(p.Electorate), uint64(p.QuorumNum), uint64(p.QuorumDen)
	switch {
	case yes*den > e*num:
		if err := x.decide(p, true); err != nil {
			return nil, err
		}
	case (e-no)*den <= e*num: // even if every remaining org says yes, it cannot pass
		if err := x.decide(p, false); err != nil {
			return nil, err
		}
	default:
		if err := x.st.put(KeyProposal(p.Id), p); err != nil {
			return nil, err
		}
	}
	x.emit("vote", "proposal", fmt.Sprint(p.Id), "org", org.Id, "approve", fmt.Sprint(m.Approve))
	return nil, nil
}

func proposalStatusName(s ProposalStatus) string {
	switch s {
	case ProposalStatus_PROPOSAL_VOTING:
		return "voting"
	case ProposalStatus_PROPOSAL_PASSED:
		return "passed"
	case ProposalStatus_PROPOSAL_REJECTED:
		return "rejected"
	case ProposalStatus_PROPOSAL_EXPIRED:
		return "expired"
	}
	return "unspecified"
}

// decide closes a proposal and applies it.
func (x *execCtx) decide(p *Proposal, pass bool) error {
	x.st.del(keyOpenProp(p.DeadlineHeight, p.Id))
	p.DecidedHeight = x.height
	if pass {
		p.Status = ProposalStatus_PROPOSAL_PASSED
	} else {
		p.Status = ProposalStatus_PROPOSAL_REJECTED
	}
	if err := x.st.put(KeyProposal(p.Id), p); err != nil {
		return err
	}
	x.emit("proposal_decided", "id", fmt.Sprint(p.Id), "status", proposalStatusName(p.Status))
	return x.settle(p, pass)
}

// settle applies a decided proposal to its subject.
func (x *execCtx) settle(p *Proposal, pass bool) error {
	switch p.Kind {
	case ProposalKind_PROPOSAL_ADMIT_ORG:
		org := &Org{}
		if _, err := load(x.st, KeyOrg(p.Subject), org); err != nil {
			return err
		}
		org.Status, org.SinceHeight = OrgStatus_ORG_REJECTED, x.height
		if pass {
			org.Status = OrgStatus_ORG_ACTIVE
		}
		if err := x.st.put(KeyOrg(org.Id), org); err != nil {
			return err
		}
		addr, _ := crypto.AddressFromBytes(p.Proposer)
		return x.settleAccount(addr, pass)
	case ProposalKind_PROPOSAL_ADD_ACCOUNT:
		addr, err := crypto.ParseAddress(p.Subject)
		if err != nil {
			return fmt.Errorf("state: proposal %d subject: %w", p.Id, err)
		}
		return x.settleAccount(addr, pass)
	case ProposalKind_PROPOSAL_ADD_VALIDATOR:
		n := &Node{}
		if _, err := load(x.st, KeyNode(p.Subject), n); err != nil {
			return err
		}
		n.Status = NodeStatus_NODE_REJECTED
		if pass {
			n.Status = NodeStatus_NODE_ACTIVE
			x.valUpdates = append(x.valUpdates, abci.ValidatorUpdate{Power: n.Power, PubKeyType: "ed25519", PubKeyBytes: n.ConsensusPubKey})
		}
		return x.st.put(KeyNode(n.Id), n)
	case ProposalKind_PROPOSAL_PIPE_MODE:
		if !pass {
			return nil
		}
		pp := &Pipe{}
		found, err := load(x.st, KeyPipe(p.Subject), pp)
		if err != nil || !found {
			return err
		}
		pp.Mode = p.Mode
		x.emit("pipe", "id", pp.Id, "mode", strings.ToLower(strings.TrimPrefix(pp.Mode.String(), "MODE_")))
		return x.st.put(KeyPipe(pp.Id), pp)
	}
	return fmt.Errorf("state: proposal %d has unknown kind %d", p.Id, p.Kind)
}

func (x *execCtx) settleAccount(addr crypto.Address, pass bool) error {
	a := &Account{}
	found, err := load(x.st, KeyAccount(addr), a)
	if err != nil || !found {
		return err
	}
	a.Status = AccountStatus_ACCOUNT_REJECTED
	if pass {
		a.Status = AccountStatus_ACCOUNT_ACTIVE
	}
	return x.st.put(KeyAccount(addr), a)
}

func (x *execCtx) proposeAccount(m *MsgProposeAccount) (*TxError, error) {
	org, r, err := x.requireRole("propose-account", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	switch m.Role {
	case Role_ROLE_OPERATOR, Role_ROLE_CROSSCHAIN, Role_ROLE_AUDITOR:
	case Role_ROLE_GOVERNOR:
		if !org.Genesis {
			return reject(CodeUnauthorized, "propose-account: only genesis orgs have governors; %s is not one", org.Id), nil
		}
	default:
		return reject(CodeInvalid, "propose-account: role must be governor, operator, cross-chain or auditor"), nil
	}
	if err := crypto.ValidatePublicKey(crypto.Suite(m.Suite), m.PublicKey); err != nil {
		return reject(CodeInvalid, "propose-account: %v", err), nil
	}
	if len(m.Name) > maxNameLen {
		return reject(CodeInvalid, "propose-account: name over %d bytes", maxNameLen), nil
	}
	addr := crypto.AddressOf(crypto.Suite(m.Suite), m.PublicKey)
	if found, err := load(x.st, KeyAccount(addr), &Account{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "propose-account: account %s already exists", addr), nil
	}
	a := &Account{Address: addr[:], Org: org.Id, Role: m.Role, Suite: m.Suite, PublicKey: m.PublicKey,
		Status: AccountStatus_ACCOUNT_PENDING, Name: m.Name}
	if err := x.st.put(KeyAccount(addr), a); err != nil {
		return nil, err
	}
	return x.propose(ProposalKind_PROPOSAL_ADD_ACCOUNT, addr.String(), org.Id)
}

// ---- nodes and registry ----

func (x *execCtx) registerNode(m *MsgRegisterNode) (*TxError, error) {
	org, r, err := x.requireRole("register-node", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if b, err := hex.DecodeString(m.Id); err != nil || len(b) != 20 {
		return reject(CodeInvalid, "register-node: node id %q must be 40 hex digits (the CometBFT node id)", m.Id), nil
	}
	if len(m.P2PAddress) > maxAddressLen {
		return reject(CodeInvalid, "register-node: p2p address over %d bytes", maxAddressLen), nil
	}
	if found, err := load(x.st, KeyNode(m.Id), &Node{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "register-node: node %s already registered", m.Id), nil
	}
	n := &Node{Id: m.Id, Org: org.Id, Kind: m.Kind, P2PAddress: m.P2PAddress}
	switch m.Kind {
	case NodeKind_NODE_AUDIT:
		n.Status = NodeStatus_NODE_ACTIVE
		if err := x.st.put(KeyNode(m.Id), n); err != nil {
			return nil, err
		}
		x.emit("node", "id", m.Id, "kind", "audit")
		return nil, nil
	case NodeKind_NODE_GOVERNANCE:
		if len(m.ConsensusPubKey) != consensusKeyLen {
			return reject(CodeInvalid, "register-node: a validator needs a %d-byte ed25519 consensus key", consensusKeyLen), nil
		}
		n.ConsensusPubKey, n.Power, n.Status = m.ConsensusPubKey, 10, NodeStatus_NODE_PENDING
		if err := x.st.put(KeyNode(m.Id), n); err != nil {
			return nil, err
		}
		return x.propose(ProposalKind_PROPOSAL_ADD_VALIDATOR, m.Id, org.Id)
	default:
		return reject(CodeInvalid, "register-node: kind must be governance or audit (genesis nodes come from genesis)"), nil
	}
}

func (x *execCtx) registerService(m *MsgRegisterService) (*TxError, error) {
	org, r, err := x.requireRole("register-service", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if r := validID("relay", m.RelayId); r != nil {
		return r, nil
	}
	if _, _, err := net.SplitHostPort(m.Address); err != nil || len(m.Address) > maxAddressLen {
		return reject(CodeInvalid, "register-service %s: address %q is not host:port", m.RelayId, m.Address), nil
	}
	if len(m.TlsCertSha256) != 0 && len(m.TlsCertSha256) != 32 {
		return reject(CodeInvalid, "register-service %s: TLS fingerprint must be a 32-byte SHA-256", m.RelayId), nil
	}
	if r, err := x.crossChainAccount("register-service "+m.RelayId, m.Account, org.Id); r != nil || err != nil {
		return r, err
	}
	if found, err := load(x.st, KeyService(m.RelayId), &Service{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "register-service: relay %s already registered", m.RelayId), nil
	}
	s := &Service{RelayId: m.RelayId, Org: org.Id, Address: m.Address, TlsCertSha256: m.TlsCertSha256, Account: m.Account, SinceHeight: x.height}
	x.emit("service", "relay", m.RelayId, "org", org.Id)
	return nil, x.st.put(KeyService(m.RelayId), s)
}

// crossChainAccount checks that raw names an active cross-chain account of org.
func (x *execCtx) crossChainAccount(action string, raw []byte, org string) (*TxError, error) {
	addr, err := crypto.AddressFromBytes(raw)
	if err != nil {
		return reject(CodeInvalid, "%s: account: %v", action, err), nil
	}
	a := &Account{}
	found, err := load(x.st, KeyAccount(addr), a)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return reject(CodeNotFound, "%s: account %s does not exist", action, addr), nil
	case a.Org != org:
		return reject(CodeUnauthorized, "%s: account %s belongs to org %s, not %s", action, addr, a.Org, org), nil
	case a.Role != Role_ROLE_CROSSCHAIN:
		return reject(CodeInvalid, "%s: account %s has role %s; it must be a cross-chain account", action, addr, roleName(a.Role)), nil
	case a.Status != AccountStatus_ACCOUNT_ACTIVE:
		return reject(CodeBadState, "%s: account %s is not active (the genesis orgs have not admitted it)", action, addr), nil
	}
	return nil, nil
}

func (x *execCtx) registerSubchain(m *MsgRegisterSubchain) (*TxError, error) {
	org, r, err := x.requireRole("register-subchain", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if r := validID("subchain", m.Id); r != nil {
		return r, nil
	}
	if r := validID("subchain kind", m.Kind); r != nil {
		return r, nil
	}
	svc := &Service{}
	found, err := load(x.st, KeyService(m.RelayId), svc)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "register-subchain %s: relay %s is not registered", m.Id, m.RelayId), nil
	}
	if svc.Org != org.Id {
		return reject(CodeUnauthorized, "register-subchain %s: relay %s belongs to org %s", m.Id, m.RelayId, svc.Org), nil
	}
	if found, err := load(x.st, KeySubchain(m.Id), &Subchain{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "register-subchain: subchain %s already registered", m.Id), nil
	}
	x.emit("subchain", "id", m.Id, "org", org.Id)
	return nil, x.st.put(KeySubchain(m.Id), &Subchain{Id: m.Id, Kind: m.Kind, Org: org.Id, RelayId: m.RelayId})
}

func (x *execCtx) registerApp(m *MsgRegisterApp) (*TxError, error) {
	org, r, err := x.requireRole("register-app", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if r := validID("app", m.Id); r != nil {
		return r, nil
	}
	sc := &Subchain{}
	found, err := load(x.st, KeySubchain(m.Subchain), sc)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "register-app %s: subchain %s is not registered", m.Id, m.Subchain), nil
	}
	if sc.Org != org.Id {
		return reject(CodeUnauthorized, "register-app %s: subchain %s belongs to org %s", m.Id, m.Subchain, sc.Org), nil
	}
	if r, err := x.crossChainAccount("register-app "+m.Id, m.Account, org.Id); r != nil || err != nil {
		return r, err
	}
	if found, err := load(x.st, KeyApp(m.Id), &App{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "register-app: app %s already registered", m.Id), nil
	}
	x.emit("app", "id", m.Id, "org", org.Id)
	return nil, x.st.put(KeyApp(m.Id), &App{Id: m.Id, Org: org.Id, Subchain: m.Subchain, Account: m.Account})
}

func (x *execCtx) registerContract(m *MsgRegisterContract) (*TxError, error) {
	org, r, err := x.requireRole("register-contract", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if r := validID("contract", m.Id); r != nil {
		return r, nil
	}
	if len(m.Address) == 0 || len(m.Address) > maxAddressLen {
		return reject(CodeInvalid, "register-contract %s: address must be 1-%d bytes", m.Id, maxAddressLen), nil
	}
	app := &App{}
	found, err := load(x.st, KeyApp(m.App), app)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "register-contract %s: app %s is not registered", m.Id, m.App), nil
	}
	if app.Org != org.Id {
		return reject(CodeUnauthorized, "register-contract %s: app %s belongs to org %s", m.Id, m.App, app.Org), nil
	}
	if found, err := load(x.st, KeyContract(m.Id), &Contract{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "register-contract: contract %s already registered", m.Id), nil
	}
	x.emit("contract", "id", m.Id, "org", org.Id)
	return nil, x.st.put(KeyContract(m.Id), &Contract{Id: m.Id, App: m.App, Subchain: app.Subchain, Org: org.Id, Address: m.Address})
}

// ---- pipes ----

// endpoint resolves a contract to the pipe endpoint it implies: its app,
// subchain, relay and the app's account and key.
func (x *execCtx) endpoint(action, contractID string) (*PipeEndpoint, *TxError, error) {
	c := &Contract{}
	found, err := load(x.st, KeyContract(contractID), c)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, reject(CodeNotFound, "%s: contract %s is not registered", action, contractID), nil
	}
	app, sc, acct := &App{}, &Subchain{}, &Account{}
	if _, err := load(x.st, KeyApp(c.App), app); err != nil {
		return nil, nil, err
	}
	if _, err := load(x.st, KeySubchain(c.Subchain), sc); err != nil {
		return nil, nil, err
	}
	addr, _ := crypto.AddressFromBytes(app.Account)
	if _, err := load(x.st, KeyAccount(addr), acct); err != nil {
		return nil, nil, err
	}
	return &PipeEndpoint{Org: c.Org, Subchain: c.Subchain, App: c.App, Contract: c.Id, Account: acct.Address,
		Suite: acct.Suite, PublicKey: acct.PublicKey, RelayId: sc.RelayId}, nil, nil
}

func (x *execCtx) applyPipe(m *MsgApplyPipe) (*TxError, error) {
	org, r, err := x.requireRole("apply-pipe", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if r := validID("pipe", m.Id); r != nil {
		return r, nil
	}
	action := "apply-pipe " + m.Id
	if found, err := load(x.st, KeyPipe(m.Id), &Pipe{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "%s: pipe already exists", action), nil
	}
	src, r, err := x.endpoint(action, m.SourceContract)
	if r != nil || err != nil {
		return r, err
	}
	if src.Org != org.Id {
		return reject(CodeUnauthorized, "%s: source contract %s belongs to org %s; only the source org applies for a pipe", action, m.SourceContract, src.Org), nil
	}
	dstOrg := &Org{}
	found, err := load(x.st, KeyOrg(m.DestinationOrg), dstOrg)
	if err != nil {
		return nil, err
	}
	if !found || dstOrg.Status != OrgStatus_ORG_ACTIVE {
		return reject(CodeNotFound, "%s: destination org %s is not an active member", action, m.DestinationOrg), nil
	}
	sc := &Subchain{}
	found, err = load(x.st, KeySubchain(m.DestinationSubchain), sc)
	if err != nil {
		return nil, err
	}
	if !found {
		return reject(CodeNotFound, "%s: destination subchain %s is not registered", action, m.DestinationSubchain), nil
	}
	if sc.Org != m.DestinationOrg {
		return reject(CodeInvalid, "%s: subchain %s belongs to org %s, not %s", action, sc.Id, sc.Org, m.DestinationOrg), nil
	}
	if sc.Id == src.Subchain {
		return reject(CodeInvalid, "%s: source and destination are both subchain %s", action, sc.Id), nil
	}
	limits := m.Limits
	if limits == nil {
		limits = &PipeLimits{}
	}
	if limits.MaxPayload == 0 {
		limits.MaxPayload = defaultPayload
	}
	if limits.MaxPayload > maxPipePayload {
		return reject(CodeInvalid, "%s: max payload %d is over the platform's %d bytes", action, limits.MaxPayload, maxPipePayload), nil
	}
	mode := m.Mode
	switch mode {
	case ConsistencyMode_CONSISTENCY_MODE_UNSPECIFIED:
		mode = ConsistencyMode_MODE_OPTIMISTIC
	case ConsistencyMode_MODE_OPTIMISTIC, ConsistencyMode_MODE_STRICT:
	default:
		return reject(CodeInvalid, "%s: consistency mode must be strict or optimistic", action), nil
	}
	p := &Pipe{Id: m.Id, Source: src, Destination: &PipeEndpoint{Org: sc.Org, Subchain: sc.Id, RelayId: sc.RelayId},
		Status: PipeStatus_PIPE_PROPOSED, Limits: limits, Mode: mode, AppliedHeight: x.height}
	x.emit("pipe", "id", m.Id, "status", "proposed", "source_org", src.Org, "destination_org", sc.Org)
	return nil, x.st.put(KeyPipe(m.Id), p)
}

// pipeFor loads a pipe for action, rejecting a missing one.
func (x *execCtx) pipeFor(action, id string) (*Pipe, *TxError, error) {
	p := &Pipe{}
	found, err := load(x.st, KeyPipe(id), p)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, reject(CodeNotFound, "%s: pipe %s does not exist", action, id), nil
	}
	return p, nil, nil
}

func (x *execCtx) authorizePipe(m *MsgAuthorizePipe) (*TxError, error) {
	org, r, err := x.requireRole("authorize-pipe", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	action := "authorize-pipe " + m.Id
	p, r, err := x.pipeFor(action, m.Id)
	if r != nil || err != nil {
		return r, err
	}
	if p.Destination.Org != org.Id {
		return reject(CodeUnauthorized, "pipe %s: only its destination org %s may authorize it, not %s", p.Id, p.Destination.Org, org.Id), nil
	}
	if p.Status != PipeStatus_PIPE_PROPOSED {
		return reject(CodeBadState, "pipe %s: is %s, not proposed", p.Id, pipeStatusName(p.Status)), nil
	}
	dst, r, err := x.endpoint(action, m.DestinationContract)
	if r != nil || err != nil {
		return r, err
	}
	if dst.Org != org.Id || dst.Subchain != p.Destination.Subchain {
		return reject(CodeInvalid, "%s: contract %s is on subchain %s of org %s; the pipe goes to subchain %s of org %s",
			action, m.DestinationContract, dst.Subchain, dst.Org, p.Destination.Subchain, p.Destination.Org), nil
	}
	p.Destination, p.Status, p.AuthorizedHeight = dst, PipeStatus_PIPE_ACTIVE, x.height
	x.emit("pipe", "id", p.Id, "status", "active")
	return nil, x.st.put(KeyPipe(p.Id), p)
}

func pipeStatusName(s PipeStatus) string {
	switch s {
	case PipeStatus_PIPE_PROPOSED:
		return "proposed"
	case PipeStatus_PIPE_ACTIVE:
		return "active"
	case PipeStatus_PIPE_SUSPENDED:
		return "suspended"
	}
	return "unspecified"
}

// pipeParty checks that the sender may suspend or resume p: an operator or
// governor of either end, or any governor of a genesis org.
func (x *execCtx) pipeParty(action string, p *Pipe) (*TxError, error) {
	org, r, err := x.requireRole(action, Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	if org.Id == p.Source.Org || org.Id == p.Destination.Org || (org.Genesis && x.sender.Role == Role_ROLE_GOVERNOR) {
		return nil, nil
	}
	return reject(CodeUnauthorized, "pipe %s: org %s is neither end of it nor a governing org", p.Id, org.Id), nil
}

func (x *execCtx) suspendPipe(m *MsgSuspendPipe) (*TxError, error) {
	p, r, err := x.pipeFor("suspend-pipe", m.Id)
	if r != nil || err != nil {
		return r, err
	}
	if r, err := x.pipeParty("suspend-pipe", p); r != nil || err != nil {
		return r, err
	}
	if len(m.Reason) > maxReasonLen {
		return reject(CodeInvalid, "suspend-pipe %s: reason over %d bytes", p.Id, maxReasonLen), nil
	}
	switch p.Status {
	case PipeStatus_PIPE_ACTIVE:
	case PipeStatus_PIPE_PROPOSED:
		return reject(CodeBadState, "pipe %s: destination org %s has not authorized it", p.Id, p.Destination.Org), nil
	default:
		return reject(CodeBadState, "pipe %s: is already suspended", p.Id), nil
	}
	p.Status, p.StatusReason = PipeStatus_PIPE_SUSPENDED, m.Reason
	x.emit("pipe", "id", p.Id, "status", "suspended")
	return nil, x.st.put(KeyPipe(p.Id), p)
}

func (x *execCtx) resumePipe(m *MsgResumePipe) (*TxError, error) {
	p, r, err := x.pipeFor("resume-pipe", m.Id)
	if r != nil || err != nil {
		return r, err
	}
	if r, err := x.pipeParty("resume-pipe", p); r != nil || err != nil {
		return r, err
	}
	if p.Status != PipeStatus_PIPE_SUSPENDED {
		return reject(CodeBadState, "pipe %s: is %s, not suspended", p.Id, pipeStatusName(p.Status)), nil
	}
	p.Status, p.StatusReason = PipeStatus_PIPE_ACTIVE, ""
	x.emit("pipe", "id", p.Id, "status", "active")
	return nil, x.st.put(KeyPipe(p.Id), p)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
