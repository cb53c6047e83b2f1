package govchain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtcrypto "github.com/cometbft/cometbft/api/cometbft/crypto/v1"
	"github.com/cosmos/iavl"
	idb "github.com/cosmos/iavl/db"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Query paths the application answers.
const (
	// QueryKey returns the value at the key in Data, with an ICS-23 proof of
	// membership or absence when Prove is set.
	QueryKey = "/key"
	// QueryList takes a ListRequest in Data and returns one page of the
	// records under its prefix, as a ListResult, without proofs. A page holds
	// at most the node's page size (10 000); Truncated says more follow.
	QueryList = "/list"
	// QueryLedgerFind takes pipe + 0x00 + big-endian sequence and returns,
	// as the value, the key of the ledger entry whose range holds it (read
	// that key with a proof: entries never overlap, so a proven entry that
	// covers the sequence is the one).
	QueryLedgerFind = "/ledger-find"
	// ProofOpType names the proof op the application returns.
	ProofOpType = "ics23:iavl"
)

const (
	// listPageSize is the most items one list query returns.
	listPageSize = 10000
	// keepVersions is how many past versions stay queryable with proofs.
	keepVersions = 10000
	appVersion   = 1
)

// Application is the governance chain's ABCI application.
//
// CometBFT's local client creator serialises every ABCI call behind one
// mutex, so Application needs no locking of its own; it must not be shared by two
// nodes.
type Application struct {
	abci.BaseApplication

	db      idb.DB
	tree    *iavl.MutableTree
	log     *slog.Logger
	chainID string
	params  *Params

	// committed is the last saved version: CheckTx and queries read it, never
	// the working tree that FinalizeBlock is changing.
	committed *iavl.ImmutableTree
	verified  *sigCache
	listPage  int // items per list page: listPageSize; tests set it lower
	// changed collects the tracked keys the block being finalized writes
	// (see keyChanges).
	changed map[string]struct{}
}

var _ abci.Application = (*Application)(nil)

// NewApp opens (or creates) the application state in dir/app.db.
func NewApp(dir string, log *slog.Logger) (*Application, error) {
	db, err := idb.NewGoLevelDB("app", dir)
	if err != nil {
		return nil, fmt.Errorf("govchain: open state db in %s: %w", dir, err)
	}
	return newApp(db, log)
}

// NewInMemoryApp keeps the state in memory; for tests and the demo.
func NewInMemoryApp(log *slog.Logger) (*Application, error) { return newApp(idb.NewMemDB(), log) }

func newApp(db idb.DB, log *slog.Logger) (*Application, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tree := iavl.NewMutableTree(db, 100_000, true, iavl.NewNopLogger())
	if _, err := tree.Load(); err != nil {
		return nil, fmt.Errorf("govchain: load state: %w", err)
	}
	a := &Application{db: db, tree: tree, log: log, verified: newSigCache(), listPage: listPageSize}
	if err := a.refreshCommitted(); err != nil {
		return nil, err
	}
	if a.tree.Version() > 0 {
		if err := a.loadMeta(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Close releases the state database.
func (a *Application) Close() error {
	err := a.tree.Close()
	return errors.Join(err, a.db.Close())
}

const keyChainID = "chain-id"

func (a *Application) loadMeta() error {
	p := &Params{}
	found, err := load(a.committed, KeyParams(), p)
	if err != nil {
		return err
	}
	if !found {
		return errors.New("govchain: state has no params")
	}
	id, err := a.committed.Get([]byte(keyChainID))
	if err != nil {
		return fmt.Errorf("govchain: read chain id: %w", err)
	}
	a.params, a.chainID = p, string(id)
	return nil
}

func (a *Application) refreshCommitted() error {
	v := a.tree.Version()
	if v == 0 {
		// Nothing saved yet: an empty immutable view.
		a.committed = iavl.NewImmutableTree(idb.NewMemDB(), 0, true, iavl.NewNopLogger())
		return nil
	}
	t, err := a.tree.GetImmutable(v)
	if err != nil {
		return fmt.Errorf("govchain: open version %d: %w", v, err)
	}
	a.committed = t
	return nil
}

// Info is called on start-up; CometBFT replays the blocks the app lacks.
func (a *Application) Info(context.Context, *abci.InfoRequest) (*abci.InfoResponse, error) {
	return &abci.InfoResponse{
		Data: "ccgp-govchain", Version: "1", AppVersion: appVersion,
		LastBlockHeight: a.tree.Version(), LastBlockAppHash: a.tree.Hash(),
	}, nil
}

// DefaultParams are the parameters a genesis without any gets.
func DefaultParams() *Params {
	return &Params{QuorumNum: 2, QuorumDen: 3, VotingPeriod: 1000, MaxTxBytes: DefaultMaxTxBytes,
		MaxOpenApplications: DefaultMaxOpenApplications, MaxApplicationsPerApplicant: DefaultMaxApplicationsPerApplicant,
		CreditRestrict: DefaultCreditRestrict, CreditExpel: DefaultCreditExpel, CreditRestrictedRate: DefaultCreditRestrictedRate,
		CreditMinAuditors: DefaultCreditMinAuditors}
}

// Defaults of the bounds on membership applications.
const (
	DefaultMaxOpenApplications         = 64
	DefaultMaxApplicationsPerApplicant = 1
)

// ParseGenesisState decodes the app_state of a genesis document.
func ParseGenesisState(b []byte) (*GenesisState, error) {
	gs := &GenesisState{}
	if len(b) == 0 {
		return nil, errors.New("govchain: genesis has no app_state")
	}
	if err := protojson.Unmarshal(b, gs); err != nil {
		return nil, fmt.Errorf("govchain: genesis app_state: %w", err)
	}
	return gs, nil
}

// EncodeGenesisState renders gs as the app_state of a genesis document.
func EncodeGenesisState(gs *GenesisState) (json.RawMessage, error) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(gs)
	return json.RawMessage(b), err
}

// InitChain writes the genesis consortium: params, genesis orgs, their
// governor accounts and the genesis validators.
func (a *Application) InitChain(_ context.Context, req *abci.InitChainRequest) (*abci.InitChainResponse, error) {
	gs, err := ParseGenesisState(req.AppStateBytes)
	if err != nil {
		return nil, err
	}
	if err := a.initState(req.ChainId, gs); err != nil {
		return nil, err
	}
	return &abci.InitChainResponse{AppHash: a.tree.WorkingHash()}, nil
}

func (a *Application) initState(chainID string, gs *GenesisState) error {
	if a.tree.Version() != 0 {
		return errors.New("govchain: InitChain on a chain that already has state")
	}
	p := gs.Params
	if p == nil {
		p = DefaultParams()
	}
	if p.QuorumDen == 0 || p.QuorumNum >= p.QuorumDen || p.VotingPeriod == 0 {
		return fmt.Errorf("govchain: genesis params: quorum %d/%d and voting period %d are invalid", p.QuorumNum, p.QuorumDen, p.VotingPeriod)
	}
	if p.MaxTxBytes == 0 {
		p.MaxTxBytes = DefaultMaxTxBytes
	}
	if p.MaxOpenApplications == 0 {
		p.MaxOpenApplications = DefaultMaxOpenApplications
	}
	if p.MaxApplicationsPerApplicant == 0 {
		p.MaxApplicationsPerApplicant = DefaultMaxApplicationsPerApplicant
	}
	if r, e := p.creditRestrict(), p.creditExpel(); r > MaxCreditScore || e > r {
		return fmt.Errorf("govchain: genesis params: credit_expel %d must be at most credit_restrict %d, which must be at most %d", e, r, MaxCreditScore)
	}
	if len(gs.Orgs) == 0 {
		return errors.New("govchain: genesis lists no orgs")
	}
	st := newOverlay(a.tree)
	if err := st.put(KeyParams(), p); err != nil {
		return err
	}
	st.set([]byte(keyChainID), []byte(chainID))
	st.set([]byte(keyElectorate), be64(uint64(len(gs.Orgs))))
	for _, o := range gs.Orgs {
		if r := validID("org", o.Id); r != nil {
			return fmt.Errorf("govchain: genesis: %w", r)
		}
		if found, _ := load(st, KeyOrg(o.Id), &Org{}); found {
			return fmt.Errorf("govchain: genesis: org %s listed twice", o.Id)
		}
		if err := st.put(KeyOrg(o.Id), &Org{Id: o.Id, Name: o.Name, Status: OrgStatus_ORG_ACTIVE, Genesis: true}); err != nil {
			return err
		}
	}
	for i, ga := range gs.Accounts {
		if found, _ := load(st, KeyOrg(ga.Org), &Org{}); !found {
			return fmt.Errorf("govchain: genesis: account %d names unknown org %q", i, ga.Org)
		}
		if err := crypto.ValidatePublicKey(crypto.Suite(ga.Suite), ga.PublicKey); err != nil {
			return fmt.Errorf("govchain: genesis: account %d: %w", i, err)
		}
		if ga.Role == Role_ROLE_UNSPECIFIED {
			return fmt.Errorf("govchain: genesis: account %d has no role", i)
		}
		addr := crypto.AddressOf(crypto.Suite(ga.Suite), ga.PublicKey)
		if err := st.put(KeyAccount(addr), &Account{Address: addr[:], Org: ga.Org, Role: ga.Role, Suite: ga.Suite,
			PublicKey: ga.PublicKey, Status: AccountStatus_ACCOUNT_ACTIVE, Name: ga.Name}); err != nil {
			return err
		}
	}
	for _, n := range gs.Nodes {
		if err := st.put(KeyNode(n.Id), &Node{Id: n.Id, Org: n.Org, Kind: NodeKind_NODE_GENESIS,
			ConsensusPubKey: n.ConsensusPubKey, Power: n.Power, Status: NodeStatus_NODE_ACTIVE}); err != nil {
			return err
		}
	}
	if err := st.flush(); err != nil {
		return err
	}
	a.params, a.chainID = p, chainID
	return nil
}

// CheckTx filters the mempool against the last committed state: the bytes
// parse, the signature verifies, the sender exists (or is applying for
// membership) and the nonce is fresh. It runs no message logic.
func (a *Application) CheckTx(_ context.Context, req *abci.CheckTxRequest) (*abci.CheckTxResponse, error) {
	if a.params == nil {
		return &abci.CheckTxResponse{Code: CodeBadState, Log: "chain not initialised"}, nil
	}
	tx, rej := decodeTx(req.Tx, a.chainID, int(a.params.MaxTxBytes), a.verified)
	if rej == nil {
		_, rej, _ = a.checkSender(a.committed, tx)
	}
	if rej != nil {
		return &abci.CheckTxResponse{Code: rej.Code, Log: rej.Msg}, nil
	}
	return &abci.CheckTxResponse{Code: CodeOK}, nil
}

// checkSender returns the sender's account (nil for an applicant's new key).
// The tx's key must be the account's current key: after a rotation the
// old key is refused (CodeStaleKey) even though the address still derives
// from it.
func (a *Application) checkSender(r reader, tx *DecodedTx) (*Account, *TxError, error) {
	acct := &Account{}
	found, err := load(r, KeyAccount(tx.Sender), acct)
	if err != nil {
		return nil, nil, err
	}
	_, applying := tx.Body.Msg.(*TxBody_ApplyOrg)
	named := len(tx.Body.Account) != 0
	name := MsgName(tx.Body)
	switch {
	case !found && applying && !named:
		return nil, nil, nil
	case !found && !named:
		// A rotated-to key signing without naming its account.
		if owner, ok, err := keyOwner(r, tx.Sender); err != nil || ok {
			if err != nil {
				return nil, nil, err
			}
			return nil, reject(CodeUnknownSender, "%s: key %s is account %s's key since a rotation; name that account in the tx (TxBody.account)", name, tx.Sender, owner), nil
		}
		return nil, reject(CodeUnknownSender, "%s: account %s is not on chain", name, tx.Sender), nil
	case !found:
		return nil, reject(CodeUnknownSender, "%s: account %s is not on chain", name, tx.Sender), nil
	case acct.Suite != tx.Suite || !bytes.Equal(acct.PublicKey, tx.PubKey):
		for _, k := range acct.PreviousKeys {
			if k.Suite == tx.Suite && bytes.Equal(k.PublicKey, tx.PubKey) {
				return nil, reject(CodeStaleKey, "%s: account %s rotated this key away at height %d; sign with its current key", name, tx.Sender, k.UntilHeight), nil
			}
		}
		return nil, reject(CodeStaleKey, "%s: the tx's key is not account %s's current key", name, tx.Sender), nil
	case tx.Body.Nonce <= acct.Nonce:
		return nil, reject(CodeBadNonce, "%s: nonce %d already used by %s (last %d): replayed tx", name, tx.Body.Nonce, tx.Sender, acct.Nonce), nil
	case acct.Status == AccountStatus_ACCOUNT_REVOKED:
		return acct, reject(CodeRevoked, "%s: account %s was revoked at height %d and may send no tx", name, tx.Sender, acct.RevokedHeight), nil
	case applying && (acct.Status == AccountStatus_ACCOUNT_REJECTED || acct.Status == AccountStatus_ACCOUNT_PENDING):
		// A refused key may apply again; a pending one meets the
		// per-applicant bound (or "already belongs") in applyOrg.
		return acct, nil, nil
	case applying:
		return acct, reject(CodeInvalid, "apply-org: account %s already belongs to org %s; an application is signed by the applicant's new key", tx.Sender, acct.Org), nil
	case acct.Status == AccountStatus_ACCOUNT_PENDING:
		return acct, reject(CodeUnauthorized, "%s: account %s is pending: the genesis orgs have not admitted it yet", MsgName(tx.Body), tx.Sender), nil
	case acct.Status != AccountStatus_ACCOUNT_ACTIVE:
		return acct, reject(CodeUnauthorized, "%s: account %s is not active", MsgName(tx.Body), tx.Sender), nil
	case acct.Role == Role_ROLE_AUDITOR && !reportsCredit(tx.Body):
		return acct, reject(CodeUnauthorized, "%s: account %s is an auditor; auditors read, audit and report credit scores, and send no other governance tx", MsgName(tx.Body), tx.Sender), nil
	}
	return acct, nil, nil
}

func reportsCredit(b *TxBody) bool { _, ok := b.Msg.(*TxBody_ReportCredit); return ok }

// FinalizeBlock executes the decided block's txs in order against the
// working tree and returns the resulting app hash. It must be deterministic:
// same block, same state, same hash on every node.
func (a *Application) FinalizeBlock(_ context.Context, req *abci.FinalizeBlockRequest) (*abci.FinalizeBlockResponse, error) {
	if a.params == nil {
		return nil, errors.New("govchain: FinalizeBlock before InitChain")
	}
	height := uint64(req.Height)
	a.changed = map[string]struct{}{}
	resp := &abci.FinalizeBlockResponse{TxResults: make([]*abci.ExecTxResult, len(req.Txs))}
	for i, raw := range req.Txs {
		res, vals, err := a.execTx(raw, height)
		if err != nil {
			return nil, fmt.Errorf("govchain: height %d tx %d: %w", height, i, err)
		}
		resp.TxResults[i] = res
		resp.ValidatorUpdates = append(resp.ValidatorUpdates, vals...)
	}
	resp.ValidatorUpdates = lastUpdatePerKey(resp.ValidatorUpdates)
	evs, err := a.expireProposals(height)
	if err != nil {
		return nil, fmt.Errorf("govchain: height %d: %w", height, err)
	}
	resp.Events = evs
	if err := a.saveChanges(height); err != nil {
		return nil, fmt.Errorf("govchain: height %d: %w", height, err)
	}
	resp.AppHash = a.tree.WorkingHash()
	return resp, nil
}

// lastUpdatePerKey keeps, for each validator key, only its last update in
// the block (at the place of its first): CometBFT refuses a block whose
// updates name one key twice, as a vote that admits a validator and an
// expulsion that removes it could in one block.
func lastUpdatePerKey(ups []abci.ValidatorUpdate) []abci.ValidatorUpdate {
	if len(ups) < 2 {
		return ups
	}
	at := make(map[string]int, len(ups))
	out := ups[:0:0]
	for _, u := range ups {
		k := u.PubKeyType + "/" + string(u.PubKeyBytes)
		if i, ok := at[k]; ok {
			out[i] = u
			continue
		}
		at[k] = len(out)
		out = append(out, u)
	}
	return out
}

func (a *Application) execTx(raw []byte, height uint64) (*abci.ExecTxResult, []abci.ValidatorUpdate, error) {
	tx, rej := decodeTx(raw, a.chainID, int(a.params.MaxTxBytes), a.verified)
	if rej != nil {
		return &abci.ExecTxResult{Code: rej.Code, Log: rej.Msg}, nil, nil
	}
	sender, rej, err := a.checkSender(a.tree, tx)
	if err != nil {
		return nil, nil, err
	}
	if rej != nil {
		return &abci.ExecTxResult{Code: rej.Code, Log: rej.Msg}, nil, nil
	}
	// The nonce is spent whatever the message does, so a rejected tx can
	// never be replayed into success later.
	if sender != nil {
		sender.Nonce = tx.Body.Nonce
		b, err := marshal.Marshal(sender)
		if err != nil {
			return nil, nil, err
		}
		if _, err := a.tree.Set(KeyAccount(tx.Sender), b); err != nil {
			return nil, nil, err
		}
	}
	x := &execCtx{chainID: a.chainID, st: newOverlay(a.tree), base: a.tree, height: height, params: a.params, sender: sender,
		senderAddr: tx.Sender, suite: tx.Suite, pubKey: tx.PubKey, nonce: tx.Body.Nonce}
	rej, err = x.deliver(tx.Body)
	if err != nil {
		return nil, nil, err
	}
	if rej != nil {
		return &abci.ExecTxResult{Code: rej.Code, Log: rej.Msg}, nil, nil
	}
	a.noteChanges(x.st)
	if err := x.st.flush(); err != nil {
		return nil, nil, err
	}
	return &abci.ExecTxResult{Code: CodeOK, Events: x.events}, x.valUpdates, nil
}

// expireProposals closes the proposals whose voting period ended at height.
func (a *Application) expireProposals(height uint64) ([]abci.Event, error) {
	end := keyOpenProp(height+1, 0)
	it, err := a.tree.Iterator([]byte(prefixOpenProp), end, true)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for ; it.Valid(); it.Next() {
		k := it.Key()
		ids = append(ids, beUint64(k[len(prefixOpenProp)+8:]))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	x := &execCtx{chainID: a.chainID, st: newOverlay(a.tree), base: a.tree, height: height, params: a.params}
	for _, id := range ids {
		p := &Proposal{}
		if _, err := load(x.st, KeyProposal(id), p); err != nil {
			return nil, err
		}
		x.st.del(keyOpenProp(p.DeadlineHeight, p.Id))
		p.Status, p.DecidedHeight = ProposalStatus_PROPOSAL_EXPIRED, height
		if err := x.st.put(KeyProposal(id), p); err != nil {
			return nil, err
		}
		if err := x.settle(p, false); err != nil {
			return nil, err
		}
		x.emit("proposal_decided", "id", fmt.Sprint(id), "status", "expired")
	}
	a.noteChanges(x.st)
	return x.events, x.st.flush()
}

// noteChanges records the tracked keys an overlay is about to write. Every
// overlay that FinalizeBlock flushes must pass through here, or a client's
// cache misses the change. (The sender's nonce, set directly, is left out
// on purpose: it changes with every tx and the cache does not serve it.)
func (a *Application) noteChanges(o *overlay) {
	for k := range o.writes {
		if tracked(k) {
			a.changed[k] = struct{}{}
		}
	}
}

// saveChanges writes the block's change log (keyChanges) if it changed a
// tracked key.
func (a *Application) saveChanges(height uint64) error {
	if len(a.changed) == 0 {
		return nil
	}
	keys := make([]string, 0, len(a.changed))
	for k := range a.changed {
		keys = append(keys, k)
	}
	_, err := a.tree.Set([]byte(keyChanges), encodeChanges(height, keys))
	return err
}

// Commit saves the working tree as the new version and prunes versions
// older than keepVersions.
func (a *Application) Commit(context.Context, *abci.CommitRequest) (*abci.CommitResponse, error) {
	_, v, err := a.tree.SaveVersion()
	if err != nil {
		return nil, fmt.Errorf("govchain: save version: %w", err)
	}
	if v > keepVersions {
		if err := a.tree.DeleteVersionsTo(v - keepVersions); err != nil {
			a.log.Warn("prune state versions", "err", err)
		}
	}
	if err := a.refreshCommitted(); err != nil {
		return nil, err
	}
	return &abci.CommitResponse{}, nil
}

// Query answers QueryKey and QueryList at a committed height (0: latest).
func (a *Application) Query(_ context.Context, req *abci.QueryRequest) (*abci.QueryResponse, error) {
	t := a.committed
	if req.Height != 0 && req.Height != t.Version() {
		old, err := a.tree.GetImmutable(req.Height)
		if err != nil {
			return &abci.QueryResponse{Code: CodeNotFound, Log: fmt.Sprintf("height %d is not available: %v", req.Height, err)}, nil
		}
		t = old
	}
	resp := &abci.QueryResponse{Height: t.Version(), Key: req.Data}
	switch req.Path {
	case QueryKey:
		v, err := t.Get(req.Data)
		if err != nil {
			return nil, fmt.Errorf("govchain: query: %w", err)
		}
		resp.Value = v
		if req.Prove {
			var err error
			var proofBytes []byte
			if v != nil {
				p, perr := t.GetMembershipProof(req.Data)
				if perr == nil {
					proofBytes, err = p.Marshal()
				} else {
					err = perr
				}
			} else {
				p, perr := t.GetNonMembershipProof(req.Data)
				if perr == nil {
					proofBytes, err = p.Marshal()
				} else {
					err = perr
				}
			}
			if err != nil {
				return nil, fmt.Errorf("govchain: proof for %q: %w", req.Data, err)
			}
			resp.ProofOps = &cmtcrypto.ProofOps{Ops: []cmtcrypto.ProofOp{{Type: ProofOpType, Key: req.Data, Data: proofBytes}}}
		}
		if v == nil {
			resp.Code, resp.Log = CodeNotFound, "no record at this key"
		}
	case QueryList:
		lr := &ListRequest{}
		if err := proto.Unmarshal(req.Data, lr); err != nil {
			return &abci.QueryResponse{Code: CodeMalformed, Log: fmt.Sprintf("list request does not decode: %v", err)}, nil
		}
		if !strings.HasSuffix(lr.Prefix, "/") {
			return &abci.QueryResponse{Code: CodeInvalid, Log: "list prefix must end in '/'"}, nil
		}
		res := &ListResult{}
		end := append([]byte(lr.Prefix[:len(lr.Prefix)-1]), '/'+1)
		start := []byte(lr.Prefix)
		if len(lr.After) != 0 {
			if !bytes.HasPrefix(lr.After, start) {
				return &abci.QueryResponse{Code: CodeInvalid, Log: "list cursor is not under the prefix"}, nil
			}
			start = append(bytes.Clone(lr.After), 0) // the smallest key after the cursor
		}
		limit := a.listPage
		if lr.Limit != 0 && int(lr.Limit) < limit {
			limit = int(lr.Limit)
		}
		t.IterateRange(start, end, true, func(k, v []byte) bool {
			if len(res.Items) == limit {
				res.Truncated = true
				return true
			}
			res.Items = append(res.Items, &KV{Key: k, Value: v})
			return false
		})
		b, err := proto.Marshal(res)
		if err != nil {
			return nil, err
		}
		resp.Value = b
	case QueryLedgerFind:
		i := bytes.IndexByte(req.Data, 0)
		if i < 0 || len(req.Data) != i+9 {
			return &abci.QueryResponse{Code: CodeInvalid, Log: "ledger-find takes pipe, 0x00, 8-byte sequence"}, nil
		}
		pipe, seq := string(req.Data[:i]), beUint64(req.Data[i+1:])
		var found []byte
		t.IterateRange(KeyLedger(pipe, 0), KeyLedger(pipe, seq+1), false, func(k, v []byte) bool {
			e := &LedgerEntry{}
			if proto.Unmarshal(v, e) == nil && e.First <= seq && seq <= e.Last {
				found = k
			}
			return true // only the nearest entry can hold seq
		})
		if found == nil {
			resp.Code, resp.Log = CodeNotFound, fmt.Sprintf("pipe %s seq %d is not in the ledger", pipe, seq)
		}
		resp.Value = found
	default:
		return &abci.QueryResponse{Code: CodeInvalid, Log: fmt.Sprintf("unknown query path %q", req.Path)}, nil
	}
	return resp, nil
}

// Params returns the chain's parameters (nil before InitChain).
func (a *Application) Params() *Params { return a.params }

// ChainID returns the chain id given at InitChain.
func (a *Application) ChainID() string { return a.chainID }
