package govchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	cmtcrypto "github.com/cometbft/cometbft/api/cometbft/crypto/v1"
	"github.com/cometbft/cometbft/mempool"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"
	ics23 "github.com/cosmos/ics23/go"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Client submits governance txs and reads proven state. It is what the CLI
// and the relays use; it works over CometBFT's RPC, in-process or HTTP.
// Safe for concurrent use.
//
// With WithTrustRoot, everything it reads is anchored: the chain id must be
// the root's, every header it uses is verified from the root with CometBFT's
// light-client rules (validator-set changes followed through signed
// headers), and proven reads check their ICS-23 proof against the app hash
// of such a header. Without a root the client trusts the validator set its
// node reports (development only; it says so once, in the log).
type Client struct {
	rpc     rpcclient.Client
	chainID string
	cfg     clientCfg
	trust   *verifier // nil: not anchored

	// evMu guards feed, the block subscription Blocks shares among its
	// callers, and serializes starting the event stream and subscribing:
	// the CometBFT websocket client races when Start and Subscribe run at
	// once (a Subscribe that reads its send channel before Start made it
	// blocks for good).
	evMu sync.Mutex
	feed *blockFeed // nil: no subscription

	mu     sync.Mutex                // guards nonces, stale and owners
	nonces map[crypto.Address]uint64 // by account
	stale  map[crypto.Address]bool   // by account: read the nonce from the chain before the next tx
	// owners maps a signing key's address to the account it signs for
	// when that is another address: the key was rotated onto the account.
	owners map[crypto.Address]crypto.Address
}

type clientCfg struct {
	commitTimeout time.Duration
	poll          time.Duration
	root          *TrustRoot
	log           *slog.Logger
}

// ClientOption configures a Client.
type ClientOption func(*clientCfg)

// WithCommitTimeout bounds how long Submit waits for a tx to be committed
// (default 30s).
func WithCommitTimeout(d time.Duration) ClientOption {
	return func(c *clientCfg) { c.commitTimeout = d }
}

// WithTrustRoot anchors every read at root (see Client).
func WithTrustRoot(root TrustRoot) ClientOption {
	return func(c *clientCfg) { c.root = &root }
}

// WithLogger sets the client's logger (default: discard).
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientCfg) { c.log = l }
}

// NewClient wraps an RPC client. With a trust root it checks the node's
// chain id and, once the node has it, the root header (else the first
// verified read does): a mismatch is ErrUntrusted. Without a root it takes
// the chain id from the node.
func NewClient(ctx context.Context, rpc rpcclient.Client, opts ...ClientOption) (*Client, error) {
	c := &Client{rpc: rpc, nonces: map[crypto.Address]uint64{}, stale: map[crypto.Address]bool{}, owners: map[crypto.Address]crypto.Address{}, cfg: clientCfg{commitTimeout: 30 * time.Second, poll: 20 * time.Millisecond}}
	for _, o := range opts {
		o(&c.cfg)
	}
	if c.cfg.log == nil {
		c.cfg.log = slog.New(slog.DiscardHandler)
	}
	st, err := rpc.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("govchain: node status: %w", err)
	}
	c.chainID = st.NodeInfo.Network
	root := c.cfg.root
	if root == nil {
		c.cfg.log.Warn("governance reads are not anchored to a trust root: the client believes the validator set its node reports (development only; configure the chain's genesis or a trusted header)")
		return c, nil
	}
	if st.NodeInfo.Network != root.ChainID {
		return nil, fmt.Errorf("%w: the node serves chain %q, the trust root names %q", ErrUntrusted, st.NodeInfo.Network, root.ChainID)
	}
	if c.trust, err = newVerifier(*root, &rpcProvider{chainID: root.ChainID, rpc: rpc}); err != nil {
		return nil, err
	}
	// A node that has not reached the root yet (a network still starting:
	// its first block needs the other validators) is checked at the first
	// verified read instead.
	if st.SyncInfo.LatestBlockHeight >= root.height() {
		if err := c.trust.init(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Dial connects to a node's RPC address ("127.0.0.1:26657" or a URL).
func Dial(ctx context.Context, addr string, opts ...ClientOption) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	h, err := rpchttp.New(addr)
	if err != nil {
		return nil, fmt.Errorf("govchain: node address %q: %w", addr, err)
	}
	c, err := NewClient(ctx, h, opts...)
	if err != nil {
		return nil, fmt.Errorf("govchain: cannot reach node at %s: %w", addr, err)
	}
	return c, nil
}

// ChainID is the chain the client signs for.
func (c *Client) ChainID() string { return c.chainID }

// RPC exposes the underlying CometBFT client.
func (c *Client) RPC() rpcclient.Client { return c.rpc }

// TxResult is a committed, accepted tx.
type TxResult struct {
	Hash   []byte
	Height int64
	Events []Event
}

// Event is a tx event with its attributes.
type Event struct {
	Type  string
	Attrs map[string]string
}

// Attr returns the first attribute key of the first event of kind typ.
func (r *TxResult) Attr(typ, key string) string {
	for _, e := range r.Events {
		if e.Type == typ {
			return e.Attrs[key]
		}
	}
	return ""
}

// Sign builds the tx carrying m from s with the next nonce. A key that
// was rotated onto an account signs for that account: the tx names it
// (TxBody.account), since the key's own address is not the account's.
func (c *Client) Sign(ctx context.Context, s crypto.Signer, m proto.Message) ([]byte, error) {
	acct, err := c.accountOf(ctx, s)
	if err != nil {
		return nil, err
	}
	nonce, err := c.nextNonce(ctx, acct)
	if err != nil {
		return nil, err
	}
	body := Wrap(m)
	if acct != crypto.SignerAddress(s) {
		body.Account = acct[:]
	}
	return NewTx(s, c.chainID, nonce, body)
}

// accountOf returns the account s signs for: the account at its key's
// own address or, when there is none, the account the key was rotated
// onto. Read unproven: a wrong answer only gets the tx refused. A key
// that is neither (a new org's, applying) signs for its own address.
func (c *Client) accountOf(ctx context.Context, s crypto.Signer) (crypto.Address, error) {
	a := crypto.SignerAddress(s)
	c.mu.Lock()
	owner, ok := c.owners[a]
	c.mu.Unlock()
	if ok {
		return owner, nil
	}
	found, err := c.getUnproven(ctx, KeyAccount(a), &Account{})
	if err != nil || found {
		return a, err
	}
	raw, found, err := c.getUnprovenRaw(ctx, KeyAlias(a))
	if err != nil || !found {
		return a, err
	}
	if owner, err = crypto.AddressFromBytes(raw); err != nil {
		return a, fmt.Errorf("govchain: alias of key %s: %w", a, err)
	}
	// Only an alias is remembered: it never changes (a key serves one
	// account, once), while a key at its own address may be rotated away.
	c.mu.Lock()
	c.owners[a] = owner
	c.mu.Unlock()
	return owner, nil
}

// Broadcast signs m and hands it to the node's mempool. A CheckTx rejection
// comes back as a *TxError; the tx is not yet committed when it returns.
func (c *Client) Broadcast(ctx context.Context, s crypto.Signer, m proto.Message) ([]byte, error) {
	raw, err := c.Sign(ctx, s, m)
	if err != nil {
		return nil, err
	}
	return c.BroadcastRaw(ctx, s, raw)
}

// BroadcastRaw hands signed tx bytes to the mempool.
func (c *Client) BroadcastRaw(ctx context.Context, s crypto.Signer, raw []byte) ([]byte, error) {
	res, err := c.rpc.BroadcastTxSync(ctx, raw)
	if err != nil {
		c.forgetNonce(s)
		if rej := checkTxRejection(err); rej != nil {
			return nil, rej
		}
		return nil, fmt.Errorf("govchain: broadcast: %w", err)
	}
	if err := TxErrorFromResult(res.Code, res.Log); err != nil {
		c.forgetNonce(s)
		return nil, err
	}
	return res.Hash, nil
}

// Submit signs m, broadcasts it and waits until it is committed. A
// rejection, in CheckTx or in the block, is a *TxError with the reason.
func (c *Client) Submit(ctx context.Context, s crypto.Signer, m proto.Message) (*TxResult, error) {
	hash, err := c.Broadcast(ctx, s, m)
	if err != nil {
		return nil, err
	}
	res, err := c.WaitTx(ctx, hash)
	if err != nil && errors.As(err, new(*TxError)) {
		c.forgetNonce(s)
	}
	return res, err
}

// WaitTx waits until the tx with hash is committed and returns its result.
func (c *Client) WaitTx(ctx context.Context, hash []byte) (*TxResult, error) {
	return c.waitTx(ctx, hash, nil)
}

// WaitTxResend is WaitTx for the signed tx raw (as BroadcastRaw took it),
// which it hands to the node again every resendEvery while the node does
// not know it: a node that stopped lost its mempool, and the tx would
// otherwise wait out the commit timeout for nothing. The same bytes carry
// the same nonce, so at most one copy commits; a copy the node still holds
// is refused as a duplicate (its cache), which changes nothing. If the
// node refuses the copy (its nonce was passed by a later tx of the
// signer, which also drops it from the mempool) and the tx still is not
// found lostGrace later, it can never commit: that refusal is returned at
// once (a *TxError, ErrBadNonce for a passed nonce) instead of the commit
// timeout.
func (c *Client) WaitTxResend(ctx context.Context, raw []byte) (*TxResult, error) {
	return c.waitTx(ctx, types.Tx(raw).Hash(), raw)
}

const (
	resendEvery = time.Second
	// lostGrace covers a tx that committed but is not indexed yet (the
	// index is written after the commit): its copy is refused for its
	// used nonce, and the next look finds it.
	lostGrace = time.Second
)

func (c *Client) waitTx(ctx context.Context, hash, raw []byte) (*TxResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.commitTimeout)
	defer cancel()
	t := time.NewTicker(c.cfg.poll)
	defer t.Stop()
	sent := time.Now()
	var refused *TxError // the node's answer to the last copy
	var refusedAt time.Time
	for {
		res, err := c.rpc.Tx(ctx, hash, false)
		if err == nil {
			return txResult(res)
		}
		now := time.Now()
		if refused != nil && now.Sub(refusedAt) >= lostGrace {
			return nil, fmt.Errorf("govchain: tx %X left the mempool uncommitted: %w", hash, refused)
		}
		if raw != nil && strings.Contains(err.Error(), "not found") && now.Sub(sent) >= resendEvery {
			sent = now
			if rej := c.resend(ctx, raw); rej == nil {
				refused = nil
			} else if refused == nil {
				refused, refusedAt = rej, now
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("govchain: tx %X not committed: %w", hash, ctx.Err())
		case <-t.C:
		}
	}
}

// resend hands raw to the node again and returns its refusal, if it
// refused the tx (not: it holds it already, or did not answer).
func (c *Client) resend(ctx context.Context, raw []byte) *TxError {
	res, err := c.rpc.BroadcastTxSync(ctx, raw)
	if err != nil {
		return checkTxRejection(err) // nil for "already in the cache" and transport errors
	}
	if err := TxErrorFromResult(res.Code, res.Log); err != nil {
		var te *TxError
		if errors.As(err, &te) {
			return te
		}
		return nil
	}
	c.cfg.log.Info("governance tx handed to the node again: it did not hold it any more", "hash", fmt.Sprintf("%X", res.Hash))
	return nil
}

// invalidTxRE matches mempool.ErrInvalidTx as it crosses the HTTP RPC,
// where only its text survives.
var invalidTxRE = regexp.MustCompile(`is invalid: code=(\d+), data=[0-9A-F]*, log='(.*)', codespace=`)

// checkTxRejection recovers the app's rejection from a broadcast error:
// CometBFT v1 reports a CheckTx failure as an error, not a result code.
func checkTxRejection(err error) *TxError {
	var inv mempool.ErrInvalidTx
	if errors.As(err, &inv) {
		return &TxError{Code: inv.Code, Msg: inv.Log}
	}
	m := invalidTxRE.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	code, convErr := strconv.ParseUint(m[1], 10, 32)
	if convErr != nil || code == 0 {
		return nil
	}
	return &TxError{Code: uint32(code), Msg: m[2]}
}

func txResult(res *ctypes.ResultTx) (*TxResult, error) {
	if err := TxErrorFromResult(res.TxResult.Code, res.TxResult.Log); err != nil {
		return nil, err
	}
	out := &TxResult{Hash: res.Hash, Height: res.Height}
	for _, e := range res.TxResult.Events {
		ev := Event{Type: e.Type, Attrs: map[string]string{}}
		for _, a := range e.Attributes {
			ev.Attrs[a.Key] = a.Value
		}
		out.Events = append(out.Events, ev)
	}
	return out, nil
}

func (c *Client) nextNonce(ctx context.Context, a crypto.Address) (uint64, error) {
	c.mu.Lock()
	n, ok := c.nonces[a]
	stale := c.stale[a]
	c.mu.Unlock()
	if !ok || stale {
		acct := &Account{}
		// The nonce need not be proven: a wrong one only gets the tx refused.
		found, err := c.getUnproven(ctx, KeyAccount(a), acct)
		if err != nil {
			return 0, err
		}
		if found {
			n = max(n, acct.Nonce)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.stale, a)
	if cur, ok := c.nonces[a]; ok && cur > n {
		n = cur
	}
	n++
	c.nonces[a] = n
	return n, nil
}

// forgetNonce makes the next tx read the account's nonce from the chain
// again after a failure, and take the higher of that and the cached one.
// The cache is never lowered: the chain takes any nonce above the last
// (a refused tx's nonce is simply skipped), and the committed nonce lags
// behind txs of this signer still in the mempool, so going back to it
// would replay their nonces.
func (c *Client) forgetNonce(s crypto.Signer) {
	a := crypto.SignerAddress(s)
	c.mu.Lock()
	if owner, ok := c.owners[a]; ok {
		a = owner
	}
	c.stale[a] = true
	c.mu.Unlock()
}

func (c *Client) getUnproven(ctx context.Context, key []byte, m proto.Message) (bool, error) {
	v, found, err := c.getUnprovenRaw(ctx, key)
	if err != nil || !found {
		return false, err
	}
	return true, proto.Unmarshal(v, m)
}

func (c *Client) getUnprovenRaw(ctx context.Context, key []byte) ([]byte, bool, error) {
	res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryKey, key, rpcclient.ABCIQueryOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("govchain: query: %w", err)
	}
	return res.Response.Value, res.Response.Value != nil, nil
}

// Get reads the record at key into m, with a proof verified against the
// app hash of a header verified from the trust root (see Client). It
// returns the state height read, or ErrNoRecord (also proven) when the key
// is absent.
func (c *Client) Get(ctx context.Context, key []byte, m proto.Message) (int64, error) {
	return c.GetAt(ctx, 0, key, m)
}

// GetAt is Get at state height h (0: the latest).
func (c *Client) GetAt(ctx context.Context, h int64, key []byte, m proto.Message) (int64, error) {
	v, h, err := c.GetRaw(ctx, h, key)
	if err != nil {
		return h, err
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return 0, fmt.Errorf("govchain: decode record %q: %w", key, err)
	}
	return h, nil
}

// GetRaw returns the proven value at key at state height h (0: latest).
func (c *Client) GetRaw(ctx context.Context, h int64, key []byte) ([]byte, int64, error) {
	res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryKey, key, rpcclient.ABCIQueryOptions{Prove: true, Height: h})
	if err != nil {
		return nil, 0, fmt.Errorf("govchain: query: %w", err)
	}
	r := res.Response
	if r.Code != CodeOK && r.Code != CodeNotFound {
		return nil, 0, fmt.Errorf("govchain: query %q: %s", key, r.Log)
	}
	if err := unavailable(r.Code, r.Height, h, key, r.Log); err != nil {
		return nil, 0, err
	}
	if (h != 0 && r.Height != h) || r.Height < 1 {
		return nil, 0, fmt.Errorf("%w: asked for %q at height %d, the node answered for height %d", ErrProof, key, h, r.Height)
	}
	appHash, err := c.appHashAfter(ctx, r.Height)
	if err != nil {
		return nil, 0, err
	}
	if err := VerifyProof(appHash, key, r.Value, r.ProofOps); err != nil {
		return nil, 0, err
	}
	if r.Value == nil {
		return nil, r.Height, ErrNoRecord
	}
	return r.Value, r.Height, nil
}

// unavailable recognises the node's "no state at that height" answer
// (CodeNotFound for no height at all: a pruned height, or a node closing
// its state as it stops). That withholds an answer, which only costs time;
// it is not a proof failure (ErrProof), which callers treat as evidence
// against the node and stop waiting on.
func unavailable(code uint32, answered, asked int64, key []byte, log string) error {
	if code != CodeNotFound || answered != 0 {
		return nil
	}
	return fmt.Errorf("govchain: query %q at height %d: state not available: %s", key, asked, log)
}

// VerifyProof checks an ICS-23 proof that key holds value (or, for a nil
// value, that key is absent) in the state whose root is appHash.
func VerifyProof(appHash, key, value []byte, ops *cmtcrypto.ProofOps) error {
	if ops == nil || len(ops.Ops) != 1 || ops.Ops[0].Type != ProofOpType {
		return fmt.Errorf("%w: response carries no %s proof", ErrProof, ProofOpType)
	}
	var p ics23.CommitmentProof
	if err := p.Unmarshal(ops.Ops[0].Data); err != nil {
		return fmt.Errorf("%w: decode: %v", ErrProof, err)
	}
	var ok bool
	if value == nil {
		ok = ics23.VerifyNonMembership(ics23.IavlSpec, appHash, &p, key)
	} else {
		ok = ics23.VerifyMembership(ics23.IavlSpec, appHash, &p, key, value)
	}
	if !ok {
		return fmt.Errorf("%w: key %q against app hash %X", ErrProof, key, appHash)
	}
	return nil
}

// appHashAfter returns the app hash of the state at version h, taken from
// the header of block h+1: verified from the trust root, or, without one,
// checked against the validator set the node reports. It waits (bounded)
// for block h+1.
func (c *Client) appHashAfter(ctx context.Context, h int64) ([]byte, error) {
	next := h + 1
	// A header already verified needs neither the wait nor the node:
	// reads at one height (proveMany, PacketStatus) share it.
	if c.trust != nil {
		if sh, ok := c.trust.cached(next); ok {
			return sh.AppHash, nil
		}
	}
	if err := c.waitHeight(ctx, next); err != nil {
		return nil, err
	}
	sh, err := c.Header(ctx, next)
	if err != nil {
		return nil, err
	}
	return sh.AppHash, nil
}

// Header returns the signed header at height h, verified from the trust
// root (ErrUntrusted when it does not verify); without a root, checked
// against the validator set the node reports (ErrProof).
func (c *Client) Header(ctx context.Context, h int64) (*types.SignedHeader, error) {
	if c.trust != nil {
		return c.trust.header(ctx, h)
	}
	cm, err := c.rpc.Commit(ctx, &h)
	if err != nil {
		return nil, fmt.Errorf("govchain: commit %d: %w", h, err)
	}
	sh := cm.SignedHeader
	if err := sh.ValidateBasic(c.chainID); err != nil {
		return nil, fmt.Errorf("%w: header %d: %v", ErrProof, h, err)
	}
	vals, err := validatorSet(ctx, c.rpc, h)
	if err != nil {
		return nil, fmt.Errorf("govchain: validators at %d: %w", h, err)
	}
	if string(vals.Hash()) != string(sh.ValidatorsHash) {
		return nil, fmt.Errorf("%w: validator set of height %d does not match its header", ErrProof, h)
	}
	if err := vals.VerifyCommitLight(c.chainID, sh.Commit.BlockID, h, sh.Commit); err != nil {
		return nil, fmt.Errorf("%w: commit of height %d: %v", ErrProof, h, err)
	}
	return &sh, nil
}

func (c *Client) waitHeight(ctx context.Context, h int64) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.commitTimeout)
	defer cancel()
	t := time.NewTicker(c.cfg.poll)
	defer t.Stop()
	for {
		st, err := c.rpc.Status(ctx)
		if err == nil && st.SyncInfo.LatestBlockHeight >= h {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("govchain: waiting for block %d: %w", h, ctx.Err())
		case <-t.C:
		}
	}
}

// Height returns the latest committed block height.
func (c *Client) Height(ctx context.Context) (int64, error) {
	st, err := c.rpc.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("govchain: status: %w", err)
	}
	return st.SyncInfo.LatestBlockHeight, nil
}

// Blocks subscribes to new blocks and sends each committed height, in
// order, until ctx ends; then the channel closes. Relays use it to keep a
// governance cache current. A consumer that falls behind makes the
// subscription skip heights: it gets the latest one next, never stale ones.
// The channel also closes if the node ends the subscription; callers then
// poll (Cache.Run does).
//
// One subscription to the node serves every caller of this client: the
// CometBFT HTTP client keeps one event channel per query, so a second
// Subscribe with the same query silently took the first caller's events
// (in a process whose relays share a Client over RPC, all caches but the
// last fell back to their once-a-second poll), and its UnsubscribeAll
// ended every caller's subscription.
func (c *Client) Blocks(ctx context.Context) (<-chan int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(chan int64, 1)
	c.evMu.Lock()
	defer c.evMu.Unlock()
	f := c.feed
	if f == nil || !f.add(out) {
		if f != nil {
			f.stop() // the node ended it
		}
		var err error
		if f, err = c.subscribeBlocks(ctx); err != nil {
			c.feed = nil
			return nil, err
		}
		c.feed = f
		f.add(out)
	}
	go func() {
		<-ctx.Done()
		c.evMu.Lock()
		defer c.evMu.Unlock()
		if f.remove(out) && c.feed == f {
			f.stop() // the last caller left
			c.feed = nil
		}
	}()
	return out, nil
}

// subscribeTimeout bounds starting the event stream and subscribing: the
// websocket client's Subscribe waits while it reconnects to a node that is
// down, and a caller should poll meanwhile rather than hang.
const subscribeTimeout = 10 * time.Second

// blockFeed is one block subscription to the node, fanned out to the
// channels of Blocks' callers.
type blockFeed struct {
	mu   sync.Mutex // guards subs and gone
	subs map[chan int64]struct{}
	gone bool // the node ended the subscription: subs are closed, none is added

	done, ended chan struct{} // stop asks the pump to end; closed when it has
	stopOnce    sync.Once
	unsubscribe func()
}

// subscribeBlocks starts a block subscription and the goroutine that fans
// its heights out. Call with evMu held.
func (c *Client) subscribeBlocks(ctx context.Context) (*blockFeed, error) {
	if s, ok := c.rpc.(interface {
		Start() error
		IsRunning() bool
	}); ok && !s.IsRunning() {
		if err := s.Start(); err != nil {
			return nil, fmt.Errorf("govchain: start event stream: %w", err)
		}
	}
	subscriber := fmt.Sprintf("ccgp-%p-%d", c, time.Now().UnixNano())
	query := types.EventQueryNewBlock.String()
	sctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
	evs, err := c.rpc.Subscribe(sctx, subscriber, query, 16)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("govchain: subscribe to blocks: %w", err)
	}
	f := &blockFeed{subs: map[chan int64]struct{}{}, done: make(chan struct{}), ended: make(chan struct{}),
		unsubscribe: func() {
			uctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = c.rpc.Unsubscribe(uctx, subscriber, query)
		}}
	go f.pump(evs)
	return f, nil
}

// pump sends each new block's height to every subscriber until stop, or
// until the node ends the subscription (then it closes them all).
func (f *blockFeed) pump(evs <-chan ctypes.ResultEvent) {
	defer close(f.ended)
	for {
		select {
		case <-f.done:
			return
		case ev, ok := <-evs:
			if !ok {
				f.mu.Lock()
				f.gone = true
				for out := range f.subs {
					close(out)
				}
				f.subs = nil
				f.mu.Unlock()
				return
			}
			nb, ok := ev.Data.(types.EventDataNewBlock)
			if !ok {
				continue
			}
			f.mu.Lock()
			for out := range f.subs {
				sendLatest(out, nb.Block.Height)
			}
			f.mu.Unlock()
		}
	}
}

// add registers out, unless the node ended the feed.
func (f *blockFeed) add(out chan int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return false
	}
	f.subs[out] = struct{}{}
	return true
}

// remove closes out (if the feed has not) and reports whether no
// subscriber is left.
func (f *blockFeed) remove(out chan int64) (empty bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[out]; ok {
		delete(f.subs, out)
		close(out)
	}
	return len(f.subs) == 0
}

// stop ends the pump, then unsubscribes. Called with the client's evMu
// held, so that no new subscription starts before the unsubscribe: the
// HTTP client's Unsubscribe drops whatever is registered under the query.
func (f *blockFeed) stop() {
	f.stopOnce.Do(func() {
		close(f.done)
		<-f.ended
		f.unsubscribe()
	})
}

// sendLatest puts h in out (capacity 1), replacing a height the consumer
// has not taken yet.
func sendLatest(out chan int64, h int64) {
	select {
	case out <- h:
		return
	default:
	}
	select {
	case <-out:
	default:
	}
	select {
	case out <- h:
	default:
	}
}

// WaitReady blocks until the node has left block sync and committed a
// block, so that it accepts txs.
func (c *Client) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		// The block store counts a block before the app has committed its
		// state: a read right after "height 1" could find the genesis
		// state not committed yet ("state not available", seen in CI), so
		// the app must say it committed a block too.
		st, err := c.rpc.Status(ctx)
		if err == nil && !st.SyncInfo.CatchingUp && st.SyncInfo.LatestBlockHeight >= 1 {
			if info, err := c.rpc.ABCIInfo(ctx); err == nil && info.Response.LastBlockHeight >= 1 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("govchain: node not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Signed is one message and the key that signs it.
type Signed struct {
	Signer crypto.Signer
	Msg    proto.Message
}

// SubmitAll broadcasts txs in order (so one signer's nonces reach the
// mempool in order) and then waits for all of them to commit; they usually
// share a block. It returns the results in order, or the first error.
func (c *Client) SubmitAll(ctx context.Context, txs []Signed) ([]*TxResult, error) {
	hashes := make([][]byte, len(txs))
	for i, tx := range txs {
		h, err := c.Broadcast(ctx, tx.Signer, tx.Msg)
		if err != nil {
			return nil, fmt.Errorf("tx %d (%T): %w", i, tx.Msg, err)
		}
		hashes[i] = h
	}
	out := make([]*TxResult, len(txs))
	for i, h := range hashes {
		r, err := c.WaitTx(ctx, h)
		// One signer's txs can reach a block out of order when another
		// validator proposes it (its mempool got them by gossip): the
		// later nonce executes first and the earlier one is refused as
		// a replay. Such a tx did not apply: it is signed again with a
		// new nonce and sent alone (seen in TestValidatorDown's set-up
		// on 4 validators).
		for try := 0; try < 3 && errors.Is(err, ErrBadNonce); try++ {
			c.forgetNonce(txs[i].Signer)
			r, err = c.Submit(ctx, txs[i].Signer, txs[i].Msg)
		}
		if err != nil {
			c.forgetNonce(txs[i].Signer)
			return nil, fmt.Errorf("tx %d (%T): %w", i, txs[i].Msg, err)
		}
		out[i] = r
	}
	return out, nil
}

// provableHeight is the newest state height whose app hash a committed
// header carries (the latest block's parent), so reads at it need not wait.
func (c *Client) provableHeight(ctx context.Context) (int64, error) {
	h, err := c.Height(ctx)
	if err != nil {
		return 0, err
	}
	if h < 2 {
		if err := c.waitHeight(ctx, 2); err != nil {
			return 0, err
		}
		return 1, nil
	}
	return h - 1, nil
}

// listKeys returns the keys under prefix at state height h, page by
// page, unproven (the caller proves what it uses; a key left out is a
// record missing, not forged).
func (c *Client) listKeys(ctx context.Context, h int64, prefix string) ([][]byte, error) {
	kvs, err := listKVs(ctx, prefix, func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryList, req, rpcclient.ABCIQueryOptions{Height: h})
		if err != nil {
			return 0, "", nil, err
		}
		return res.Response.Code, res.Response.Log, res.Response.Value, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (at height %d)", err, h)
	}
	keys := make([][]byte, len(kvs))
	for i, kv := range kvs {
		keys[i] = kv.Key
	}
	return keys, nil
}

// proveWorkers bounds the proven reads proveMany runs at once.
const proveWorkers = 8

// proveMany reads every key at state height h, each proven against the
// one verified app hash of h; a nil value is a proven absence.
func (c *Client) proveMany(ctx context.Context, h int64, keys [][]byte) ([][]byte, error) {
	appHash, err := c.appHashAfter(ctx, h)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(proveWorkers, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				v, err := c.proveAt(ctx, h, appHash, keys[i])
				if err != nil {
					cancel(err)
					return
				}
				out[i] = v
			}
		}()
	}
feed:
	for i := range keys {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// proveAt reads key at height h and checks its proof against appHash.
func (c *Client) proveAt(ctx context.Context, h int64, appHash, key []byte) ([]byte, error) {
	res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryKey, key, rpcclient.ABCIQueryOptions{Prove: true, Height: h})
	if err != nil {
		return nil, fmt.Errorf("govchain: query: %w", err)
	}
	r := res.Response
	if r.Code != CodeOK && r.Code != CodeNotFound {
		return nil, fmt.Errorf("govchain: query %q: %s", key, r.Log)
	}
	if err := unavailable(r.Code, r.Height, h, key, r.Log); err != nil {
		return nil, err
	}
	if r.Height != h {
		return nil, fmt.Errorf("%w: asked for %q at height %d, the node answered for height %d", ErrProof, key, h, r.Height)
	}
	if err := VerifyProof(appHash, key, r.Value, r.ProofOps); err != nil {
		return nil, err
	}
	return r.Value, nil
}
