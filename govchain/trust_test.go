package govchain

import (
	"context"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"
	"time"

	cmtbytes "github.com/cometbft/cometbft/libs/bytes"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain/govchaintest"
)

func genesisRoot(t *testing.T, n *LocalNode) TrustRoot {
	t.Helper()
	r, err := n.TrustRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTrustRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a CometBFT node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn, nodes := startTestnet(t, 1, 0)
	n := nodes[0]
	root := genesisRoot(t, n)
	c, err := NewClient(ctx, n.RPC(), WithTrustRoot(root))
	if err != nil {
		t.Fatal(err)
	}
	if c.trust == nil {
		t.Fatal("client with a root is not anchored")
	}
	submit(ctx, t, c, crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"})
	if o, err := c.Org(ctx, "org-x"); err != nil || o.Status != OrgStatus_ORG_PENDING {
		t.Fatalf("proven read with the genesis root: %v %v", o, err)
	}
	if _, err := c.Org(ctx, "org-none"); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("proven absence: %v", err)
	}

	// A root at a trusted header works as well.
	sh, err := c.Header(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	hroot, err := TrustRootFromHeader(tn.ChainID, 3, hex.EncodeToString(sh.Hash()))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := NewClient(ctx, n.RPC(), WithTrustRoot(hroot))
	if err != nil {
		t.Fatalf("header root: %v", err)
	}
	if _, err := hc.Org(ctx, "org-x"); err != nil {
		t.Fatalf("proven read with a header root: %v", err)
	}
	// Reads below the root header verify backwards along the hash chain.
	if _, err := hc.Header(ctx, 1); err != nil {
		t.Fatalf("header below the root: %v", err)
	}

	// Roots that do not match the chain are refused.
	other, err := GenerateTestnet(TestnetOptions{Dir: t.TempDir(), ChainID: tn.ChainID, Validators: 1})
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, err := TrustRootFromGenesis(filepath.Join(other.Nodes[0].Home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	wrongChain := root
	wrongChain.ChainID = "another-chain"
	badHash := append([]byte(nil), sh.Hash()...)
	badHash[0] ^= 1
	for name, r := range map[string]TrustRoot{
		"wrong chain id":           wrongChain,
		"wrong genesis validators": otherRoot,
		"wrong trusted hash":       {ChainID: tn.ChainID, Height: 3, Hash: badHash},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewClient(ctx, n.RPC(), WithTrustRoot(r))
			if !errors.Is(err, ErrUntrusted) {
				t.Fatalf("got %v, want ErrUntrusted", err)
			}
		})
	}
}

// TestHostileNode has a node's RPC answers tampered with; an anchored
// client refuses each forgery.
func TestHostileNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a CometBFT node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, nodes := startTestnet(t, 1, 0)
	n := nodes[0]
	root := genesisRoot(t, n)
	honest := client(t, n)
	submit(ctx, t, honest, crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"})

	attacker := types.NewMockPV()
	attackerPub, _ := attacker.GetPubKey()
	attackerVals := types.NewValidatorSet([]*types.Validator{types.NewValidator(attackerPub, 10)})
	// forge re-signs a header with the attacker's key after changing it.
	forge := func(res *ctypes.ResultCommit) {
		h := res.SignedHeader.Header
		h.AppHash = make([]byte, 32)
		h.ValidatorsHash, h.NextValidatorsHash = attackerVals.Hash(), attackerVals.Hash()
		id := types.BlockID{Hash: h.Hash(), PartSetHeader: res.SignedHeader.Commit.BlockID.PartSetHeader}
		vs := types.NewVoteSet(h.ChainID, h.Height, 0, types.PrecommitType, attackerVals)
		ec, err := types.MakeExtCommit(id, h.Height, 0, vs, []types.PrivValidator{attacker}, h.Time.Add(time.Millisecond), false)
		if err != nil {
			t.Error(err)
			return
		}
		res.SignedHeader.Commit = ec.ToCommit()
	}
	cases := []struct {
		name string
		set  func(*govchaintest.Tamper)
		want error
	}{
		{"header changed, commit kept", func(tp *govchaintest.Tamper) {
			tp.OnCommit(func(res *ctypes.ResultCommit) { res.SignedHeader.Header.AppHash = make([]byte, 32) })
		}, ErrUntrusted},
		{"fork signed by a foreign validator set", func(tp *govchaintest.Tamper) {
			tp.OnCommit(forge)
			tp.OnValidators(func(res *ctypes.ResultValidators) { res.Validators, res.Total = attackerVals.Validators, 1 })
		}, ErrUntrusted},
		{"validator set changed", func(tp *govchaintest.Tamper) {
			tp.OnValidators(func(res *ctypes.ResultValidators) { res.Validators[0].VotingPower++ })
		}, ErrUntrusted},
		{"value changed", func(tp *govchaintest.Tamper) {
			tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
				if len(res.Response.Value) > 0 {
					res.Response.Value[len(res.Response.Value)-1] ^= 1
				}
			})
		}, ErrProof},
		{"record claimed absent", func(tp *govchaintest.Tamper) {
			tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) { res.Response.Value = nil })
		}, ErrProof},
		{"proof changed", func(tp *govchaintest.Tamper) {
			tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
				if res.Response.ProofOps != nil {
					d := res.Response.ProofOps.Ops[0].Data
					d[len(d)/2] ^= 0xff
				}
			})
		}, ErrProof},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := govchaintest.NewTamper(n.RPC())
			// The client starts honest (root checked), then the node turns.
			c, err := NewClient(ctx, tp, WithTrustRoot(root), WithCommitTimeout(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			tc.set(tp)
			_, err = c.Org(ctx, "org-x")
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			// A client that starts against the lying node refuses too (a
			// forged root header, or a forged read).
			if _, err := NewClient(ctx, tp, WithTrustRoot(root), WithCommitTimeout(5*time.Second)); err == nil {
				if _, err := c.Org(ctx, "org-x"); !errors.Is(err, tc.want) {
					t.Fatalf("fresh client: got %v, want %v", err, tc.want)
				}
			} else if !errors.Is(err, ErrUntrusted) {
				t.Fatalf("fresh client: %v", err)
			}
		})
	}

	// A node reporting another chain id is refused at once.
	tp := govchaintest.NewTamper(n.RPC())
	tp.OnStatus(func(st *ctypes.ResultStatus) { st.NodeInfo.Network = "evil" })
	if _, err := NewClient(ctx, tp, WithTrustRoot(root)); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("foreign chain id: %v", err)
	}

	// The cache refuses to load from a lying node.
	tp = govchaintest.NewTamper(n.RPC())
	c, err := NewClient(ctx, tp, WithTrustRoot(root), WithCommitTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tp.OnQuery(func(path string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
		if path == QueryKey && len(res.Response.Value) > 0 {
			res.Response.Value[0] ^= 1
		}
	})
	if _, err := NewCache(ctx, c, nil); !errors.Is(err, ErrProof) {
		t.Fatalf("cache from a lying node: %v", err)
	}
}

// TestTrustFollowsValidatorChange adds a validator by vote; clients
// anchored at the one-validator genesis follow the change through signed
// headers, both one that was running and one that starts afterwards.
func TestTrustFollowsValidatorChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 2 CometBFT nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, nodes := startTestnet(t, 1, 1)
	val, audit := nodes[0], nodes[1]
	c := client(t, val)
	cache, err := NewCache(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.cmt.PrivValidator().GetPubKey()
	if err != nil {
		t.Fatal(err)
	}
	r := submit(ctx, t, c, crypto.DevSigner("gov-org-1"), &MsgRegisterNode{Id: audit.ID(), Kind: NodeKind_NODE_GOVERNANCE, ConsensusPubKey: pub.Bytes()})
	voteIn(ctx, t, c, r, []string{"org-1"})
	if err := waitValidator(ctx, audit); err != nil {
		t.Fatal(err)
	}
	// Blocks after the change are signed by both validators.
	h, _ := c.Height(ctx)
	if err := val.WaitForHeight(ctx, h+3); err != nil {
		t.Fatal(err)
	}
	submit(ctx, t, c, crypto.DevSigner("y-admin"), &MsgApplyOrg{Id: "org-y", Name: "Y"})
	for _, cl := range []*Client{c, client(t, val), client(t, audit)} {
		if _, err := cl.Org(ctx, "org-y"); err != nil {
			t.Fatalf("proven read after the validator change: %v", err)
		}
		sh, err := cl.Header(ctx, 0+mustHeight(ctx, t, cl)-1)
		if err != nil {
			t.Fatal(err)
		}
		if len(sh.Commit.Signatures) != 2 {
			t.Fatalf("latest header signed by %d validators, want 2", len(sh.Commit.Signatures))
		}
	}
	if err := cache.Refresh(ctx); err != nil {
		t.Fatalf("cache across the validator change: %v", err)
	}
	if _, ok := cache.Org("org-y"); !ok {
		t.Fatal("cache lacks org-y")
	}
	checkCacheConsistent(ctx, t, cache)
}

func mustHeight(ctx context.Context, t *testing.T, c *Client) int64 {
	t.Helper()
	h, err := c.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func waitValidator(ctx context.Context, n *LocalNode) error {
	for {
		ok, err := n.IsValidator(ctx)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkCacheConsistent compares the cache's view with a fresh proven load
// at the same height: the change log missed nothing.
func checkCacheConsistent(ctx context.Context, t *testing.T, k *Cache) {
	t.Helper()
	cur := k.snap.Load()
	fresh, err := k.load(ctx, cur.height)
	if err != nil {
		t.Fatal(err)
	}
	eq := func(what string, a, b map[string]proto.Message) {
		if len(a) != len(b) {
			t.Fatalf("%s: cache holds %d, a fresh load %d", what, len(a), len(b))
		}
		for id, m := range a {
			if !proto.Equal(m, b[id]) {
				t.Fatalf("%s %s: cache %v, fresh %v", what, id, m, b[id])
			}
		}
	}
	conv := func(s *cacheSnap) [4]map[string]proto.Message {
		var out [4]map[string]proto.Message
		for i := range out {
			out[i] = map[string]proto.Message{}
		}
		for id, v := range s.orgs {
			out[0][id] = v
		}
		for id, v := range s.pipes {
			out[1][id] = v
		}
		for id, v := range s.services {
			out[2][id] = v
		}
		for id, v := range s.accounts {
			a := proto.Clone(v).(*Account)
			a.Nonce = 0 // the change log leaves nonces out
			out[3][id.String()] = a
		}
		return out
	}
	a, b := conv(cur), conv(fresh)
	for i, what := range []string{"orgs", "pipes", "services", "accounts"} {
		eq(what, a[i], b[i])
	}
}

// TestCacheServesOnlyActive: the view's answers depend on the statuses of
// the account and org behind a record.
func TestCacheServesOnlyActive(t *testing.T) {
	relay := crypto.SignerAddress(crypto.DevSigner("relay-a"))
	s := &cacheSnap{height: 1,
		orgs:     map[string]*Org{"org-a": {Id: "org-a", Status: OrgStatus_ORG_ACTIVE}},
		accounts: map[crypto.Address]*Account{relay: {Address: relay[:], Org: "org-a", Status: AccountStatus_ACCOUNT_ACTIVE}},
		services: map[string]*Service{"relay-a": {RelayId: "relay-a", Org: "org-a", Account: relay[:]}},
		pipes:    map[string]*Pipe{"p": {Id: "p", Status: PipeStatus_PIPE_SUSPENDED}},
	}
	k := &Cache{}
	k.snap.Store(s)
	if _, ok := k.Service("relay-a"); !ok {
		t.Fatal("active service refused")
	}
	if _, ok := k.Account(relay); !ok {
		t.Fatal("active account refused")
	}
	if p, ok := k.Pipe("p"); !ok || p.Status != PipeStatus_PIPE_SUSPENDED {
		t.Fatal("a suspended pipe must still be returned")
	}
	for _, st := range []AccountStatus{AccountStatus_ACCOUNT_PENDING, AccountStatus_ACCOUNT_REJECTED, AccountStatus_ACCOUNT_REVOKED} {
		s.accounts[relay].Status = st
		if _, ok := k.Account(relay); ok {
			t.Fatalf("account %v served", st)
		}
		if _, ok := k.Service("relay-a"); ok {
			t.Fatalf("service with account %v served", st)
		}
	}
	s.accounts[relay].Status = AccountStatus_ACCOUNT_ACTIVE
	for _, st := range []OrgStatus{OrgStatus_ORG_PENDING, OrgStatus_ORG_REJECTED, OrgStatus_ORG_EXPELLED} {
		s.orgs["org-a"].Status = st
		if _, ok := k.Service("relay-a"); ok {
			t.Fatalf("service of a %v org served", st)
		}
	}
	delete(s.orgs, "org-a")
	if _, ok := k.Service("relay-a"); ok {
		t.Fatal("service of an unknown org served")
	}
}
