package govchain

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"github.com/cometbft/cometbft/types"
)

// TrustRoot is what the operator trusts the governance chain to be, set
// out of band: the chain id and either the genesis validator set (from the
// genesis file) or the hash of one header. Every header the client uses is
// verified from it with CometBFT's light-client rules, and every proven read
// is checked against the app hash of such a header.
type TrustRoot struct {
	// ChainID must match the node's and every header's.
	ChainID string
	// GenesisValidators, with InitialHeight, anchors at the chain's first
	// block: its header must name this set and carry a commit signed by
	// more than 2/3 of it.
	GenesisValidators *types.ValidatorSet
	// InitialHeight is the genesis initial_height (0 means 1).
	InitialHeight int64
	// Height and Hash anchor at one header instead (a height and hash an
	// operator read from a node it trusts, e.g. `ccgp gov status`).
	Height int64
	Hash   []byte
	// Period is how long a verified header may serve as the base for
	// verifying later ones (the light client's trusting period). Zero means
	// DefaultTrustingPeriod.
	Period time.Duration
}

// DefaultTrustingPeriod is TrustRoot.Period unless set. The consortium's
// validators are bound by membership, not by bonded stake, so the period
// bounds how long a retired validator set stays able to mislead a client
// that has not followed the chain: past it, configure a recent header.
const DefaultTrustingPeriod = 14 * 24 * time.Hour

// maxClockDrift is how far in the future a header's time may be.
const maxClockDrift = 10 * time.Second

// TrustRootFromGenesis reads the chain id and genesis validators of the
// genesis file at path (a node's config/genesis.json).
func TrustRootFromGenesis(path string) (TrustRoot, error) {
	doc, err := types.GenesisDocFromFile(path)
	if err != nil {
		return TrustRoot{}, fmt.Errorf("govchain: trust root: %w", err)
	}
	return TrustRootFromGenesisDoc(doc)
}

// TrustRootFromGenesisDoc is TrustRootFromGenesis for a parsed document.
func TrustRootFromGenesisDoc(doc *types.GenesisDoc) (TrustRoot, error) {
	if err := doc.ValidateAndComplete(); err != nil {
		return TrustRoot{}, fmt.Errorf("govchain: trust root: genesis: %w", err)
	}
	if len(doc.Validators) == 0 {
		return TrustRoot{}, errors.New("govchain: trust root: genesis lists no validators")
	}
	vals := make([]*types.Validator, len(doc.Validators))
	for i, v := range doc.Validators {
		vals[i] = types.NewValidator(v.PubKey, v.Power)
	}
	return TrustRoot{ChainID: doc.ChainID, GenesisValidators: types.NewValidatorSet(vals), InitialHeight: doc.InitialHeight}, nil
}

// TrustRootFromHeader builds a root from a chain id, a height and the hex
// hash of that height's header (as flags give them).
func TrustRootFromHeader(chainID string, height int64, hashHex string) (TrustRoot, error) {
	h, err := hex.DecodeString(hashHex)
	switch {
	case chainID == "":
		return TrustRoot{}, errors.New("govchain: trust root: a chain id is required")
	case height < 1:
		return TrustRoot{}, fmt.Errorf("govchain: trust root: height %d: must be at least 1", height)
	case err != nil || len(h) != 32:
		return TrustRoot{}, fmt.Errorf("govchain: trust root: header hash %q: want 64 hex digits", hashHex)
	}
	return TrustRoot{ChainID: chainID, Height: height, Hash: h}, nil
}

func (r TrustRoot) validate() error {
	switch {
	case r.ChainID == "":
		return errors.New("govchain: trust root: no chain id")
	case r.GenesisValidators != nil && r.Hash != nil:
		return errors.New("govchain: trust root: give genesis validators or a header hash, not both")
	case r.GenesisValidators != nil:
		return r.GenesisValidators.ValidateBasic()
	case r.Height < 1 || len(r.Hash) != 32:
		return errors.New("govchain: trust root: needs genesis validators, or a height and a 32-byte header hash")
	}
	return nil
}

func (r TrustRoot) height() int64 {
	if r.GenesisValidators == nil {
		return r.Height
	}
	return max(r.InitialHeight, 1)
}

// rpcProvider is a light-client provider over any rpcclient.Client (the
// in-process local client or HTTP): a light block is the signed header and
// validator set of a height, both as the node claims them. It checks only
// their shape; trust comes from the verifier.
type rpcProvider struct {
	chainID string
	rpc     rpcclient.Client
}

var _ provider.Provider = (*rpcProvider)(nil)

var (
	tooHighRE = regexp.MustCompile(`height \d+ must be less than or equal to`)
	missingRE = regexp.MustCompile(`height \d+ is not available|is below base height|could not find`)
)

func (p *rpcProvider) ChainID() string { return p.chainID }

// LightBlock returns the light block at height (0: the latest). It returns
// provider.ErrHeightTooHigh for a height the node has not reached and
// provider.ErrBadLightBlock for an answer of the wrong shape.
func (p *rpcProvider) LightBlock(ctx context.Context, height int64) (*types.LightBlock, error) {
	if height < 0 {
		return nil, provider.ErrBadLightBlock{Reason: fmt.Errorf("negative height %d", height)}
	}
	var hp *int64
	if height > 0 {
		hp = &height
	}
	cm, err := p.rpc.Commit(ctx, hp)
	if err != nil {
		return nil, providerErr(err)
	}
	sh := cm.SignedHeader
	if sh.IsEmpty() {
		return nil, provider.ErrHeightTooHigh
	}
	if height != 0 && sh.Height != height {
		return nil, provider.ErrBadLightBlock{Reason: fmt.Errorf("asked for height %d, got %d", height, sh.Height)}
	}
	vals, err := validatorSet(ctx, p.rpc, sh.Height)
	if err != nil {
		return nil, err
	}
	lb := &types.LightBlock{SignedHeader: &sh, ValidatorSet: vals}
	if err := lb.ValidateBasic(p.chainID); err != nil {
		return nil, provider.ErrBadLightBlock{Reason: err}
	}
	return lb, nil
}

// ReportEvidence hands misbehaviour evidence to the node.
func (p *rpcProvider) ReportEvidence(ctx context.Context, ev types.Evidence) error {
	_, err := p.rpc.BroadcastEvidence(ctx, ev)
	return err
}

func providerErr(err error) error {
	switch {
	case tooHighRE.MatchString(err.Error()):
		return fmt.Errorf("%w: %v", provider.ErrHeightTooHigh, err)
	case missingRE.MatchString(err.Error()):
		return fmt.Errorf("%w: %v", provider.ErrLightBlockNotFound, err)
	}
	return fmt.Errorf("govchain: light block: %w", err)
}

// validatorSet reads the whole validator set at h, page by page (at most
// 100 pages of 100: a node cannot make the client loop).
func validatorSet(ctx context.Context, rpc rpcclient.Client, h int64) (*types.ValidatorSet, error) {
	var all []*types.Validator
	perPage := 100
	for page := 1; page <= 100; page++ {
		p := page
		res, err := rpc.Validators(ctx, &h, &p, &perPage)
		if err != nil {
			return nil, providerErr(err)
		}
		if len(res.Validators) == 0 || res.Total <= 0 {
			return nil, provider.ErrBadLightBlock{Reason: fmt.Errorf("empty validator set page %d at height %d", page, h)}
		}
		all = append(all, res.Validators...)
		if len(all) >= res.Total {
			break
		}
	}
	vs, err := types.ValidatorSetFromExistingValidators(all)
	if err != nil {
		return nil, provider.ErrBadLightBlock{Reason: err}
	}
	return vs, nil
}

// maxTrusted bounds the verified light blocks a verifier keeps (the root
// stays, the oldest others go first).
const maxTrusted = 1024

// verifier holds the light blocks verified so far from a TrustRoot and
// verifies new ones, forward with light.Verify (adjacent: signed by more
// than 2/3 of the validators the previous header names; skipping: by at
// least 1/3 of a trusted set, bisecting when that fails, as CometBFT's light
// client does) and backward along the hash chain. Safe for concurrent use;
// verification is serialised.
type verifier struct {
	root  TrustRoot
	p     provider.Provider
	now   func() time.Time
	level struct{ num, den uint64 }

	mu      sync.Mutex // guards the following
	trusted map[int64]*types.LightBlock
	heights []int64 // sorted keys of trusted
}

func newVerifier(root TrustRoot, p provider.Provider) (*verifier, error) {
	if err := root.validate(); err != nil {
		return nil, err
	}
	if root.Period == 0 {
		root.Period = DefaultTrustingPeriod
	}
	return &verifier{root: root, p: p, now: time.Now, trusted: map[int64]*types.LightBlock{}}, nil
}

// init fetches and checks the root's light block: a chain id or header that
// does not match the root is ErrUntrusted.
func (v *verifier) init(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.heights) > 0 {
		return nil
	}
	r := v.root
	h := r.height()
	lb, err := v.p.LightBlock(ctx, h)
	if err != nil {
		var bad provider.ErrBadLightBlock
		if errors.As(err, &bad) {
			return fmt.Errorf("%w: root header %d: %v", ErrUntrusted, h, err)
		}
		return fmt.Errorf("govchain: root header %d: %w", h, err)
	}
	if r.GenesisValidators != nil {
		if !bytes.Equal(lb.ValidatorsHash, r.GenesisValidators.Hash()) {
			return fmt.Errorf("%w: header %d names validators %X, the genesis file %X", ErrUntrusted, h, lb.ValidatorsHash, r.GenesisValidators.Hash())
		}
		if err := r.GenesisValidators.VerifyCommitLight(r.ChainID, lb.Commit.BlockID, h, lb.Commit); err != nil {
			return fmt.Errorf("%w: header %d is not signed by the genesis validators: %v", ErrUntrusted, h, err)
		}
	} else {
		if !bytes.Equal(lb.Hash(), r.Hash) {
			return fmt.Errorf("%w: header %d has hash %X, the trust root %X", ErrUntrusted, h, lb.Hash(), r.Hash)
		}
		if err := lb.ValidatorSet.VerifyCommitLight(r.ChainID, lb.Commit.BlockID, h, lb.Commit); err != nil {
			return fmt.Errorf("%w: trusted header %d carries a bad commit: %v", ErrUntrusted, h, err)
		}
	}
	v.add(lb)
	return nil
}

// header returns the verified header at height h.
func (v *verifier) header(ctx context.Context, h int64) (*types.SignedHeader, error) {
	if err := v.init(ctx); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if lb, ok := v.trusted[h]; ok {
		return lb.SignedHeader, nil
	}
	target, err := v.fetch(ctx, h)
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(v.heights), func(i int) bool { return v.heights[i] > h })
	if i == 0 {
		err = v.backward(ctx, v.trusted[v.heights[0]], target)
	} else {
		err = v.forward(ctx, v.trusted[v.heights[i-1]], target, 0)
	}
	if err != nil {
		return nil, err
	}
	return target.SignedHeader, nil
}

func (v *verifier) fetch(ctx context.Context, h int64) (*types.LightBlock, error) {
	lb, err := v.p.LightBlock(ctx, h)
	if err != nil {
		var bad provider.ErrBadLightBlock
		if errors.As(err, &bad) {
			return nil, fmt.Errorf("%w: header %d: %v", ErrUntrusted, h, err)
		}
		return nil, err
	}
	return lb, nil
}

// forward verifies target from trusted, bisecting when too little of the
// trusted set signed it. Called with mu held.
func (v *verifier) forward(ctx context.Context, trusted, target *types.LightBlock, depth int) error {
	err := light.Verify(trusted.SignedHeader, trusted.ValidatorSet, target.SignedHeader, target.ValidatorSet,
		v.root.Period, v.now(), maxClockDrift, light.DefaultTrustLevel)
	var cant light.ErrNewValSetCantBeTrusted
	switch {
	case err == nil:
		v.add(target)
		return nil
	case errors.As(err, &cant) && depth < 64:
		mid, ferr := v.fetch(ctx, (trusted.Height+target.Height)/2)
		if ferr != nil {
			return ferr
		}
		if err := v.forward(ctx, trusted, mid, depth+1); err != nil {
			return err
		}
		return v.forward(ctx, mid, target, depth+1)
	}
	var expired light.ErrOldHeaderExpired
	if errors.As(err, &expired) {
		return fmt.Errorf("%w: header %d, the newest trusted below %d, is older than the trusting period %v; configure a recent trusted header: %v",
			ErrUntrusted, trusted.Height, target.Height, v.root.Period, err)
	}
	return fmt.Errorf("%w: header %d from trusted %d: %v", ErrUntrusted, target.Height, trusted.Height, err)
}

// backward verifies target, below every trusted header, along the chain
// of LastBlockID hashes. Called with mu held.
func (v *verifier) backward(ctx context.Context, trusted, target *types.LightBlock) error {
	cur := trusted
	for cur.Height > target.Height+1 {
		lb, err := v.fetch(ctx, cur.Height-1)
		if err != nil {
			return err
		}
		if err := light.VerifyBackwards(lb.Header, cur.Header); err != nil {
			return fmt.Errorf("%w: header %d below trusted %d: %v", ErrUntrusted, lb.Height, cur.Height, err)
		}
		cur = lb
	}
	if err := light.VerifyBackwards(target.Header, cur.Header); err != nil {
		return fmt.Errorf("%w: header %d below trusted %d: %v", ErrUntrusted, target.Height, cur.Height, err)
	}
	v.add(target)
	return nil
}

// cached returns the verified header at h if one is kept, without asking
// the node.
func (v *verifier) cached(h int64) (*types.SignedHeader, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if lb, ok := v.trusted[h]; ok {
		return lb.SignedHeader, true
	}
	return nil, false
}

// add stores a verified light block. Called with mu held.
func (v *verifier) add(lb *types.LightBlock) {
	if _, ok := v.trusted[lb.Height]; ok {
		return
	}
	v.trusted[lb.Height] = lb
	i := sort.Search(len(v.heights), func(i int) bool { return v.heights[i] > lb.Height })
	v.heights = append(v.heights, 0)
	copy(v.heights[i+1:], v.heights[i:])
	v.heights[i] = lb.Height
	if len(v.heights) > maxTrusted {
		// Drop the oldest but the root (index 0 is the root or older).
		drop := 1
		if v.heights[0] != v.root.height() {
			drop = 0
		}
		delete(v.trusted, v.heights[drop])
		v.heights = append(v.heights[:drop], v.heights[drop+1:]...)
	}
}
