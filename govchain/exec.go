package govchain

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
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
	maxPreviousKeys = 16
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
	chainID    string
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
	case *TxBody_RevokeAccount:
		return x.revokeAccount(m.RevokeAccount)
	case *TxBody_ProposeExpelOrg:
		return x.proposeExpelOrg(m.ProposeExpelOrg)
	case *TxBody_RotateKey:
		return x.rotateKey(m.RotateKey)
	case *TxBody_UpdateService:
		return x.updateService(m.UpdateService)
	case *TxBody_ReportCredit:
		return x.reportCredit(m.ReportCredit)
	default:
		return reject(CodeMalformed, "tx carries no known message"), nil
	}
}

// MsgName names a tx's message ("register-service"), as rejections and the
// analytics ledger (governance.msg_type) do: the name of the TxBody oneof
// field it travels in, with dashes, so a new message is named without a
// second list beside the proto. A body without a message is "unknown".
func MsgName(body *TxBody) string {
	m := body.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("msg"))
	if fd == nil {
		return "unknown"
	}
	return strings.ReplaceAll(string(fd.Name()), "_", "-")
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
	// Applications cost the applicant nothing, so they are bounded: per
	// applicant (an application makes the key's account, and an account
	// belongs to one org, so a limit above 1 cannot be reached) and in all.
	mine, err := counter(x.st, keyApplying(x.senderAddr))
	if err != nil {
		return nil, err
	}
	if limit := x.params.applicationsPerApplicant(); mine >= limit {
		return reject(CodeLimit, "apply-org: applicant %s already has %d application(s) voting, the most one applicant may (max_applications_per_applicant)", x.senderAddr, mine), nil
	}
	// A key whose earlier application or proposal was refused may apply
	// again; any other account already belongs to an org.
	if x.sender != nil && x.sender.Status != AccountStatus_ACCOUNT_REJECTED {
		return reject(CodeInvalid, "apply-org: account %s already belongs to org %s; an application is signed by the applicant's new key", x.senderAddr, x.sender.Org), nil
	}
	if owner, ok, err := keyOwner(x.st, x.senderAddr); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "apply-org: this key is account %s's (rotated onto it); an application needs a new key", owner), nil
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
	open, err := counter(x.st, []byte(keyOpenApps))
	if err != nil {
		return nil, err
	}
	if limit := x.params.openApplications(); open >= limit {
		return reject(CodeLimit, "apply-org: %d applications are already voting, the most the chain takes (max_open_applications); apply again once some are decided", open), nil
	}
	if err := x.st.addCounter([]byte(keyOpenApps), 1); err != nil {
		return nil, err
	}
	if err := x.st.addCounter(keyApplying(x.senderAddr), 1); err != nil {
		return nil, err
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

// openApplications and applicationsPerApplicant are the application bounds,
// with the defaults for chains whose params predate them.
func (p *Params) openApplications() uint64 {
	if p.MaxOpenApplications == 0 {
		return DefaultMaxOpenApplications
	}
	return uint64(p.MaxOpenApplications)
}

func (p *Params) applicationsPerApplicant() uint64 {
	if p.MaxApplicationsPerApplicant == 0 {
		return DefaultMaxApplicationsPerApplicant
	}
	return uint64(p.MaxApplicationsPerApplicant)
}

// propose opens a proposal without a reason.
func (x *execCtx) propose(kind ProposalKind, subject, proposerOrg string) (*TxError, error) {
	return x.proposeWhy(kind, subject, proposerOrg, "")
}

// proposeWhy opens a proposal. The electorate is the active genesis orgs,
// less the subject of an expulsion: an org does not vote on its own.
func (x *execCtx) proposeWhy(kind ProposalKind, subject, proposerOrg, reason string) (*TxError, error) {
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
	if kind == ProposalKind_PROPOSAL_EXPEL_ORG {
		if elector, err := x.isElector(subject); err != nil {
			return nil, err
		} else if elector {
			electorate--
		}
	}
	p := &Proposal{Id: id, Kind: kind, Subject: subject, ProposerOrg: proposerOrg, Proposer: x.senderAddr[:],
		CreatedHeight: x.height, DeadlineHeight: x.height + x.params.VotingPeriod, Status: ProposalStatus_PROPOSAL_VOTING,
		Electorate: electorate, QuorumNum: x.params.QuorumNum, QuorumDen: x.params.QuorumDen, Reason: reason}
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
	case ProposalKind_PROPOSAL_REVOKE_ACCOUNT:
		return "revoke-account"
	case ProposalKind_PROPOSAL_EXPEL_ORG:
		return "expel-org"
	case ProposalKind_PROPOSAL_REVOKE_SERVICE:
		return "revoke-service"
	}
	return "unspecified"
}

// isElector says whether org is an active genesis org: one that votes.
func (x *execCtx) isElector(id string) (bool, error) {
	org := &Org{}
	found, err := load(x.st, KeyOrg(id), org)
	return found && org.Genesis && org.Status == OrgStatus_ORG_ACTIVE, err
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
	if p.Kind == ProposalKind_PROPOSAL_EXPEL_ORG && p.Subject == org.Id {
		return reject(CodeUnauthorized, "vote: org %s does not vote on its own expulsion (proposal %d)", org.Id, p.Id), nil
	}
	for _, v := range p.Votes {
		if v.Org == org.Id {
			return reject(CodeDoubleVote, "vote: org %s already voted on proposal %d", org.Id, p.Id), nil
		}
	}
	p.Votes = append(p.Votes, &Vote{Org: org.Id, Voter: x.senderAddr[:], Approve: m.Approve, Height: x.height})
	// Emitted before a decision's own events, which may cascade.
	x.emit("vote", "proposal", fmt.Sprint(p.Id), "org", org.Id, "approve", fmt.Sprint(m.Approve))
	return nil, x.decideIfDone(p)
}

// tally says whether p's votes decide it: it passes when yes votes * den >
// electorate * num, and fails when it could not pass even if every elector
// yet to vote said yes.
func tally(p *Proposal) (decided, pass bool) {
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
		return true, true
	case no >= e || (e-no)*den <= e*num:
		return true, false
	}
	return false, false
}

// decideIfDone decides p if its votes do, else saves it.
func (x *execCtx) decideIfDone(p *Proposal) error {
	if decided, pass := tally(p); decided {
		return x.decide(p, pass)
	}
	return x.st.put(KeyProposal(p.Id), p)
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
		// The application stops counting against the bounds.
		if err := x.st.addCounter([]byte(keyOpenApps), -1); err != nil {
			return err
		}
		if err := x.st.addCounter(keyApplying(addr), -1); err != nil {
			return err
		}
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
	case ProposalKind_PROPOSAL_REVOKE_ACCOUNT:
		if !pass {
			return nil
		}
		addr, err := crypto.ParseAddress(p.Subject)
		if err != nil {
			return fmt.Errorf("state: proposal %d subject: %w", p.Id, err)
		}
		a := &Account{}
		found, err := load(x.st, KeyAccount(addr), a)
		if err != nil || !found || a.Status == AccountStatus_ACCOUNT_REVOKED {
			return err // revoked meanwhile by its own org: nothing left to do
		}
		return x.revoke(a, "account revoked", p.Reason)
	case ProposalKind_PROPOSAL_EXPEL_ORG:
		if !pass {
			return nil
		}
		org := &Org{}
		found, err := load(x.st, KeyOrg(p.Subject), org)
		if err != nil || !found || org.Status == OrgStatus_ORG_EXPELLED {
			return err
		}
		return x.expel(org)
	case ProposalKind_PROPOSAL_REVOKE_SERVICE:
		if !pass {
			return nil
		}
		return x.revokeService(p.Subject)
	}
	return fmt.Errorf("state: proposal %d has unknown kind %d", p.Id, p.Kind)
}

func (x *execCtx) settleAccount(addr crypto.Address, pass bool) error {
	a := &Account{}
	found, err := load(x.st, KeyAccount(addr), a)
	if err != nil || !found || a.Status != AccountStatus_ACCOUNT_PENDING {
		return err // revoked while pending: a vote never brings it back
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
	if owner, ok, err := keyOwner(x.st, addr); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "propose-account: this key is account %s's (rotated onto it); a key serves one account", owner), nil
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
	if r := checkEndpoint("register-service "+m.RelayId, m.Address, m.TlsCertSha256); r != nil {
		return r, nil
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
	s := &Service{RelayId: m.RelayId, Org: org.Id, Address: m.Address, TlsCertSha256: m.TlsCertSha256, Account: m.Account,
		SinceHeight: x.height, Status: ServiceStatus_SERVICE_ACTIVE}
	x.emit("service", "relay", m.RelayId, "org", org.Id, "status", "active")
	return nil, x.st.put(KeyService(m.RelayId), s)
}

// checkEndpoint checks a service's QUIC address and TLS fingerprint, both
// required: a relay is reachable and recognisable or not registered.
func checkEndpoint(action, address string, fingerprint []byte) *TxError {
	if _, _, err := net.SplitHostPort(address); err != nil || len(address) > maxAddressLen {
		return reject(CodeInvalid, "%s: address %q is not host:port", action, address)
	}
	if len(fingerprint) != 32 {
		return reject(CodeInvalid, "%s: TLS fingerprint must be the 32-byte SHA-256 of the relay's certificate (got %d bytes)", action, len(fingerprint))
	}
	return nil
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
	if err := x.restrictNewPipe(p); err != nil {
		return nil, err
	}
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
	if p.AuthorizedHeight == 0 {
		return reject(CodeBadState, "pipe %s: was suspended before its destination org authorized it; apply for a new pipe", p.Id), nil
	}
	if r, err := x.endpointsLive("resume-pipe "+p.Id, p); r != nil || err != nil {
		return r, err
	}
	p.Status, p.StatusReason = PipeStatus_PIPE_ACTIVE, ""
	x.emit("pipe", "id", p.Id, "status", "active")
	return nil, x.st.put(KeyPipe(p.Id), p)
}

// ---- misbehaving parties: revocation, expulsion, key rotation ----

// revokeAccount revokes an account: at once when the sender governs or
// operates the account's own org; by vote when a governor of another,
// genesis, org asks.
func (x *execCtx) revokeAccount(m *MsgRevokeAccount) (*TxError, error) {
	org, r, err := x.requireRole("revoke-account", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	addr, err := crypto.AddressFromBytes(m.Account)
	if err != nil {
		return reject(CodeInvalid, "revoke-account: account: %v", err), nil
	}
	if len(m.Reason) > maxReasonLen {
		return reject(CodeInvalid, "revoke-account %s: reason over %d bytes", addr, maxReasonLen), nil
	}
	a := &Account{}
	found, err := load(x.st, KeyAccount(addr), a)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return reject(CodeNotFound, "revoke-account: account %s does not exist", addr), nil
	case a.Status == AccountStatus_ACCOUNT_REVOKED:
		return reject(CodeBadState, "revoke-account: account %s was already revoked at height %d", addr, a.RevokedHeight), nil
	case a.Status == AccountStatus_ACCOUNT_REJECTED:
		return reject(CodeBadState, "revoke-account: account %s was never admitted (rejected)", addr), nil
	case a.Org == org.Id:
		return nil, x.revoke(a, "account revoked", m.Reason)
	case org.Genesis && x.sender.Role == Role_ROLE_GOVERNOR:
		return x.proposeWhy(ProposalKind_PROPOSAL_REVOKE_ACCOUNT, addr.String(), org.Id, m.Reason)
	}
	return reject(CodeUnauthorized, "revoke-account: account %s belongs to org %s; only that org's governors and operators revoke it at once, or the genesis orgs by vote (a governor of a genesis org proposes it)", addr, a.Org), nil
}

func (x *execCtx) proposeExpelOrg(m *MsgProposeExpelOrg) (*TxError, error) {
	org, r, err := x.requireRole("propose-expel-org", Role_ROLE_GOVERNOR)
	if r != nil || err != nil {
		return r, err
	}
	if !org.Genesis {
		return reject(CodeUnauthorized, "propose-expel-org: only genesis orgs propose expulsions; %s is not one", org.Id), nil
	}
	if len(m.Reason) > maxReasonLen {
		return reject(CodeInvalid, "propose-expel-org %s: reason over %d bytes", m.Org, maxReasonLen), nil
	}
	target := &Org{}
	found, err := load(x.st, KeyOrg(m.Org), target)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return reject(CodeNotFound, "propose-expel-org: org %s does not exist", m.Org), nil
	case target.Status != OrgStatus_ORG_ACTIVE:
		return reject(CodeBadState, "propose-expel-org: org %s is not an active member", m.Org), nil
	}
	if target.Genesis {
		if e, err := x.genesisOrgs(); err != nil {
			return nil, err
		} else if e <= 1 {
			return reject(CodeInvalid, "propose-expel-org: %s is the last genesis org; nobody would be left to vote", m.Org), nil
		}
	}
	return x.proposeWhy(ProposalKind_PROPOSAL_EXPEL_ORG, m.Org, org.Id, m.Reason)
}

// revoke marks a revoked and cuts what it signs for: every pipe whose
// source or destination endpoint names it is suspended with reason, and
// every service it signs batches for is revoked.
func (x *execCtx) revoke(a *Account, reason, note string) error {
	addr, err := crypto.AddressFromBytes(a.Address)
	if err != nil {
		return fmt.Errorf("state: account record: %w", err)
	}
	if err := x.markRevoked(a, note); err != nil {
		return err
	}
	names := func(e *PipeEndpoint) bool { return e != nil && bytes.Equal(e.Account, addr[:]) }
	if err := x.suspendPipes(reason, func(p *Pipe) bool { return names(p.Source) || names(p.Destination) }); err != nil {
		return err
	}
	return x.revokeServices(func(s *Service) bool { return bytes.Equal(s.Account, addr[:]) })
}

func (x *execCtx) markRevoked(a *Account, note string) error {
	a.Status, a.RevokedHeight, a.StatusReason = AccountStatus_ACCOUNT_REVOKED, x.height, note
	addr, _ := crypto.AddressFromBytes(a.Address)
	x.emit("account", "address", addr.String(), "org", a.Org, "status", "revoked")
	return x.st.put(KeyAccount(addr), a)
}

// expel expels org: its accounts are revoked, its services revoked, every
// pipe with an endpoint in it suspended. A genesis org leaves the
// electorate, and the proposals still voting are recounted without it.
func (x *execCtx) expel(org *Org) error {
	elector := org.Genesis && org.Status == OrgStatus_ORG_ACTIVE
	org.Status, org.ExpelledHeight = OrgStatus_ORG_EXPELLED, x.height
	if err := x.st.put(KeyOrg(org.Id), org); err != nil {
		return err
	}
	x.emit("org", "id", org.Id, "status", "expelled")
	keys, err := x.keysUnder(prefixAccount)
	if err != nil {
		return err
	}
	for _, k := range keys {
		a := &Account{}
		if _, err := load(x.st, k, a); err != nil {
			return err
		}
		if a.Org != org.Id || a.Status == AccountStatus_ACCOUNT_REVOKED || a.Status == AccountStatus_ACCOUNT_REJECTED {
			continue
		}
		if err := x.markRevoked(a, "org expelled"); err != nil {
			return err
		}
	}
	inOrg := func(e *PipeEndpoint) bool { return e != nil && e.Org == org.Id }
	if err := x.suspendPipes("org expelled", func(p *Pipe) bool { return inOrg(p.Source) || inOrg(p.Destination) }); err != nil {
		return err
	}
	if err := x.revokeServices(func(s *Service) bool { return s.Org == org.Id }); err != nil {
		return err
	}
	if err := x.removeValidators(org.Id); err != nil {
		return err
	}
	if !elector {
		return nil
	}
	e, err := x.genesisOrgs()
	if err != nil {
		return err
	}
	x.st.set([]byte(keyElectorate), be64(uint64(e-1)))
	return x.recount(org.Id)
}

// removeValidators takes an expelled org's validators out of the consensus
// set (power 0; the node records keep their status), unless that would
// leave no validator at all: then they stay until others are voted in.
func (x *execCtx) removeValidators(org string) error {
	keys, err := x.keysUnder(prefixNode)
	if err != nil {
		return err
	}
	var total, theirs int64
	var nodes []*Node
	for _, k := range keys {
		n := &Node{}
		if _, err := load(x.st, k, n); err != nil {
			return err
		}
		if n.Status != NodeStatus_NODE_ACTIVE || n.Power <= 0 || len(n.ConsensusPubKey) == 0 {
			continue
		}
		total += n.Power
		if n.Org == org {
			theirs += n.Power
			nodes = append(nodes, n)
		}
	}
	if theirs == 0 || theirs == total {
		return nil
	}
	for _, n := range nodes {
		x.valUpdates = append(x.valUpdates, abci.ValidatorUpdate{Power: 0, PubKeyType: "ed25519", PubKeyBytes: n.ConsensusPubKey})
		n.Power = 0
		x.emit("node", "id", n.Id, "org", org, "power", "0")
		if err := x.st.put(KeyNode(n.Id), n); err != nil {
			return err
		}
	}
	return nil
}

// recount takes an expelled genesis org out of every proposal still voting:
// its vote is dropped, the electorate shrinks by one, and a proposal that
// the remaining votes now decide is decided here (which may cascade: the
// chain is bounded by the number of genesis orgs).
func (x *execCtx) recount(expelled string) error {
	keys, err := x.keysUnder(prefixOpenProp)
	if err != nil {
		return err
	}
	for _, k := range keys {
		p := &Proposal{}
		if _, err := load(x.st, KeyProposal(beUint64(k[len(prefixOpenProp)+8:])), p); err != nil {
			return err
		}
		if p.Status != ProposalStatus_PROPOSAL_VOTING {
			continue // decided earlier in this tx
		}
		if p.Kind == ProposalKind_PROPOSAL_EXPEL_ORG && p.Subject == expelled {
			continue // its electorate never counted the org; it settles as a no-op
		}
		votes := p.Votes[:0]
		for _, v := range p.Votes {
			if v.Org != expelled {
				votes = append(votes, v)
			}
		}
		p.Votes = votes
		if p.Electorate > 0 {
			p.Electorate--
		}
		if err := x.decideIfDone(p); err != nil {
			return err
		}
	}
	return nil
}

// suspendPipes suspends, with reason, every pipe that match selects and
// that is not suspended already (a suspended one gets the new reason).
// Proposed pipes are suspended too, so they can never be authorized.
func (x *execCtx) suspendPipes(reason string, match func(*Pipe) bool) error {
	keys, err := x.keysUnder(prefixPipe)
	if err != nil {
		return err
	}
	for _, k := range keys {
		p := &Pipe{}
		if _, err := load(x.st, k, p); err != nil {
			return err
		}
		if !match(p) {
			continue
		}
		p.Status, p.StatusReason = PipeStatus_PIPE_SUSPENDED, reason
		x.emit("pipe", "id", p.Id, "status", "suspended", "reason", reason)
		if err := x.st.put(k, p); err != nil {
			return err
		}
	}
	return nil
}

func (x *execCtx) revokeServices(match func(*Service) bool) error {
	keys, err := x.keysUnder(prefixService)
	if err != nil {
		return err
	}
	for _, k := range keys {
		s := &Service{}
		if _, err := load(x.st, k, s); err != nil {
			return err
		}
		if s.Status == ServiceStatus_SERVICE_REVOKED || !match(s) {
			continue
		}
		s.Status, s.RevokedHeight = ServiceStatus_SERVICE_REVOKED, x.height
		x.emit("service", "relay", s.RelayId, "org", s.Org, "status", "revoked")
		if err := x.st.put(k, s); err != nil {
			return err
		}
	}
	return nil
}

// keysUnder lists, in key order, the keys under prefix in the working tree.
// Callers read each record back through the overlay, so this tx's own
// changes count; no caller scans a kind of record that its tx creates.
func (x *execCtx) keysUnder(prefix string) ([][]byte, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	it, err := x.base.Iterator([]byte(prefix), end, true)
	if err != nil {
		return nil, fmt.Errorf("state: scan %q: %w", prefix, err)
	}
	var keys [][]byte
	for ; it.Valid(); it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("state: scan %q: %w", prefix, err)
	}
	return keys, nil
}

// endpointsLive checks that both ends of p may carry traffic again: their
// orgs active and their accounts active.
func (x *execCtx) endpointsLive(action string, p *Pipe) (*TxError, error) {
	for _, e := range []*PipeEndpoint{p.Source, p.Destination} {
		org := &Org{}
		if _, err := load(x.st, KeyOrg(e.Org), org); err != nil {
			return nil, err
		}
		if org.Status != OrgStatus_ORG_ACTIVE {
			return reject(CodeBadState, "%s: org %s is not an active member", action, e.Org), nil
		}
		addr, err := crypto.AddressFromBytes(e.Account)
		if err != nil {
			return nil, fmt.Errorf("state: pipe %s endpoint account: %w", p.Id, err)
		}
		a := &Account{}
		if _, err := load(x.st, KeyAccount(addr), a); err != nil {
			return nil, err
		}
		if a.Status != AccountStatus_ACCOUNT_ACTIVE {
			return reject(CodeBadState, "%s: endpoint account %s is not active (revoked?)", action, addr), nil
		}
	}
	return nil, nil
}

// rotateKey moves the sending account to a new key, from this block on.
// The account keeps its address; the old key goes to previous_keys and its
// signatures are refused from now on (checkSender); every pipe endpoint
// that names the account takes the new key in the same tx.
func (x *execCtx) rotateKey(m *MsgRotateKey) (*TxError, error) {
	if err := crypto.ValidatePublicKey(crypto.Suite(m.NewSuite), m.NewPublicKey); err != nil {
		return reject(CodeInvalid, "rotate-key: new key: %v", err), nil
	}
	if len(m.NewSignature) == 0 || len(m.NewSignature) > maxSigLen {
		return reject(CodeInvalid, "rotate-key: the new key's signature must be 1-%d bytes", maxSigLen), nil
	}
	a := &Account{}
	if _, err := load(x.st, KeyAccount(x.senderAddr), a); err != nil {
		return nil, err
	}
	if a.Suite == m.NewSuite && bytes.Equal(a.PublicKey, m.NewPublicKey) {
		return reject(CodeInvalid, "rotate-key: that is already account %s's key", x.senderAddr), nil
	}
	keyAddr := crypto.AddressOf(crypto.Suite(m.NewSuite), m.NewPublicKey)
	if found, err := load(x.st, KeyAccount(keyAddr), &Account{}); err != nil || found {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "rotate-key: the new key is account %s's own; a key serves one account, once", keyAddr), nil
	}
	if owner, ok, err := keyOwner(x.st, keyAddr); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return reject(CodeExists, "rotate-key: the new key was already rotated onto account %s; a key serves one account, once", owner), nil
	}
	stmt := RotationStatement(x.chainID, x.senderAddr, m.NewSuite, m.NewPublicKey, x.nonce)
	if err := crypto.Verify(crypto.Suite(m.NewSuite), m.NewPublicKey, stmt, m.NewSignature); err != nil {
		return reject(CodeBadSignature, "rotate-key: the new key's signature over the rotation statement does not verify: %v", err), nil
	}
	a.PreviousKeys = append(a.PreviousKeys, &PreviousKey{Suite: a.Suite, PublicKey: a.PublicKey, UntilHeight: x.height})
	if n := len(a.PreviousKeys); n > maxPreviousKeys {
		a.PreviousKeys = a.PreviousKeys[n-maxPreviousKeys:]
	}
	a.Suite, a.PublicKey, a.KeyHeight = m.NewSuite, m.NewPublicKey, x.height
	if err := x.st.put(KeyAccount(x.senderAddr), a); err != nil {
		return nil, err
	}
	x.st.set(KeyAlias(keyAddr), x.senderAddr[:])
	keys, err := x.keysUnder(prefixPipe)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		p := &Pipe{}
		if _, err := load(x.st, k, p); err != nil {
			return nil, err
		}
		changed := false
		for _, e := range []*PipeEndpoint{p.Source, p.Destination} {
			if e != nil && bytes.Equal(e.Account, x.senderAddr[:]) {
				e.Suite, e.PublicKey, changed = m.NewSuite, m.NewPublicKey, true
			}
		}
		if changed {
			x.emit("pipe", "id", p.Id, "status", pipeStatusName(p.Status), "key_rotated", x.senderAddr.String())
			if err := x.st.put(k, p); err != nil {
				return nil, err
			}
		}
	}
	x.emit("account", "address", x.senderAddr.String(), "org", a.Org, "key_height", fmt.Sprint(x.height))
	return nil, nil
}

func (x *execCtx) updateService(m *MsgUpdateService) (*TxError, error) {
	org, r, err := x.requireRole("update-service", Role_ROLE_GOVERNOR, Role_ROLE_OPERATOR)
	if r != nil || err != nil {
		return r, err
	}
	action := "update-service " + m.RelayId
	s := &Service{}
	found, err := load(x.st, KeyService(m.RelayId), s)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return reject(CodeNotFound, "%s: relay is not registered", action), nil
	case s.Org != org.Id:
		return reject(CodeUnauthorized, "%s: relay belongs to org %s; only its own org updates it", action, s.Org), nil
	case s.Status == ServiceStatus_SERVICE_REVOKED:
		return reject(CodeBadState, "%s: the service was revoked at height %d", action, s.RevokedHeight), nil
	}
	if r := checkEndpoint(action, m.Address, m.TlsCertSha256); r != nil {
		return r, nil
	}
	s.Address, s.TlsCertSha256, s.UpdatedHeight = m.Address, m.TlsCertSha256, x.height
	x.emit("service", "relay", s.RelayId, "org", s.Org, "status", "updated")
	return nil, x.st.put(KeyService(s.RelayId), s)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
