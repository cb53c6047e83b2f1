package govchain

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

// startTestnet generates and starts a loopback network; t.Cleanup stops it.
func startTestnet(t *testing.T, validators, audits int) (*Testnet, []*LocalNode) {
	t.Helper()
	tn, err := GenerateTestnet(TestnetOptions{Dir: t.TempDir(), ChainID: "ccgp-test", Validators: validators,
		AuditNodes: audits, BlockInterval: 100 * time.Millisecond,
		Params: &Params{QuorumNum: 2, QuorumDen: 3, VotingPeriod: 500}})
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*LocalNode, len(tn.Nodes))
	for i, n := range tn.Nodes {
		ln, err := StartNode(context.Background(), n.Home, nil)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = ln
		t.Cleanup(func() { ln.Stop() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := client(t, n).WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return tn, nodes
}

func client(t *testing.T, n *LocalNode) *Client {
	t.Helper()
	c, err := n.Client(WithCommitTimeout(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// submit sends m and fails the test on any error.
func submit(ctx context.Context, t *testing.T, c *Client, s crypto.Signer, m proto.Message) *TxResult {
	t.Helper()
	r, err := c.Submit(ctx, s, m)
	if err != nil {
		t.Fatalf("%T: %v", m, err)
	}
	return r
}

// voteIn has the given genesis orgs approve the proposal created by r.
func voteIn(ctx context.Context, t *testing.T, c *Client, r *TxResult, orgs []string) {
	t.Helper()
	id := r.Attr("proposal", "id")
	if id == "" {
		t.Fatal("tx created no proposal")
	}
	pid, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		t.Fatalf("proposal id %q: %v", id, err)
	}
	for _, o := range orgs {
		submit(ctx, t, c, crypto.DevSigner("gov-"+o), &MsgVote{ProposalId: pid, Approve: true})
	}
	p, err := c.Proposal(ctx, pid)
	if err != nil || p.Status != ProposalStatus_PROPOSAL_PASSED {
		t.Fatalf("proposal %d: %v %v", pid, p, err)
	}
}

func TestFourValidatorGovernance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 CometBFT nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tn, nodes := startTestnet(t, 4, 0)
	c := client(t, nodes[0])
	orgs := tn.Orgs // org-1..org-4; a proposal needs 3 of 4

	// Org admission by vote.
	d := crypto.DevSigner("org-d-admin")
	r := submit(ctx, t, c, d, &MsgApplyOrg{Id: "org-d", Name: "Org D"})
	voteIn(ctx, t, c, r, orgs[:3])
	if o, err := c.Org(ctx, "org-d"); err != nil || o.Status != OrgStatus_ORG_ACTIVE {
		t.Fatalf("org-d: %v %v", o, err)
	}

	// Accounts by vote, then services, subchains, apps, contracts.
	setup := func(org string, admin crypto.Signer) {
		cc := crypto.DevSigner("cc-" + org)
		r := submit(ctx, t, c, admin, &MsgProposeAccount{Role: Role_ROLE_CROSSCHAIN, Suite: "ed25519", PublicKey: cc.PublicKey()})
		voteIn(ctx, t, c, r, orgs[1:])
		submit(ctx, t, c, admin, &MsgRegisterService{RelayId: "relay-" + org, Address: "127.0.0.1:7001", TlsCertSha256: fp, Account: addr(cc)})
		submit(ctx, t, c, admin, &MsgRegisterSubchain{Id: "chain-" + org, Kind: "simchain", RelayId: "relay-" + org})
		submit(ctx, t, c, admin, &MsgRegisterApp{Id: "app-" + org, Subchain: "chain-" + org, Account: addr(cc)})
		submit(ctx, t, c, admin, &MsgRegisterContract{Id: "ct-" + org, App: "app-" + org, Address: "0x" + org})
	}
	setup("org-1", crypto.DevSigner("gov-org-1"))
	setup("org-d", d)
	if acct, err := c.Account(ctx, crypto.SignerAddress(crypto.DevSigner("cc-org-d"))); err != nil || acct.Status != AccountStatus_ACCOUNT_ACTIVE {
		t.Fatalf("cross-chain account of org-d: %v %v", acct, err)
	}

	// Pipe apply and authorize.
	submit(ctx, t, c, crypto.DevSigner("gov-org-1"), &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-1", DestinationOrg: "org-d", DestinationSubchain: "chain-org-d"})
	_, err := c.Submit(ctx, crypto.DevSigner("gov-org-2"), &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-d"})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "only its destination org org-d") {
		t.Fatalf("authorize by a third org: %v", err)
	}
	submit(ctx, t, c, d, &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-d"})
	if p, err := c.Pipe(ctx, "p1"); err != nil || p.Status != PipeStatus_PIPE_ACTIVE {
		t.Fatalf("p1: %v %v", p, err)
	}

	// One validator down: 3 of 4 still commit, and a second pipe goes through.
	if err := nodes[3].Stop(); err != nil {
		t.Fatal(err)
	}
	h, _ := c.Height(ctx)
	if err := nodes[0].WaitForHeight(ctx, h+3); err != nil {
		t.Fatalf("chain stalled with one validator down: %v", err)
	}
	submit(ctx, t, c, d, &MsgApplyPipe{Id: "p2", SourceContract: "ct-org-d", DestinationOrg: "org-1", DestinationSubchain: "chain-org-1", Mode: ConsistencyMode_MODE_STRICT})
	submit(ctx, t, c, crypto.DevSigner("gov-org-1"), &MsgAuthorizePipe{Id: "p2", DestinationContract: "ct-org-1"})
	p2, err := c.Pipe(ctx, "p2")
	if err != nil || p2.Status != PipeStatus_PIPE_ACTIVE || p2.Mode != ConsistencyMode_MODE_STRICT {
		t.Fatalf("p2 with a validator down: %v %v", p2, err)
	}
	// The surviving validators agree on the state.
	h, _ = c.Height(ctx)
	for _, n := range nodes[:3] {
		if err := n.WaitForHeight(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAuditNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CometBFT nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn, nodes := startTestnet(t, 2, 1)
	val, audit := nodes[0], nodes[2]
	c := client(t, val)

	// An auditor account is added by vote; it can read but not govern.
	aud := crypto.DevSigner("auditor-1")
	r := submit(ctx, t, c, crypto.DevSigner("gov-org-1"), &MsgProposeAccount{Role: Role_ROLE_AUDITOR, Suite: "ed25519", PublicKey: aud.PublicKey()})
	voteIn(ctx, t, c, r, tn.Orgs)
	submit(ctx, t, c, crypto.DevSigner("gov-org-1"), &MsgRegisterNode{Id: audit.ID(), Kind: NodeKind_NODE_AUDIT, P2PAddress: tn.Nodes[2].P2P})

	// The audit node syncs to the same app hash.
	h, _ := c.Height(ctx)
	if err := audit.WaitForHeight(ctx, h+1); err != nil {
		t.Fatalf("audit node does not sync: %v", err)
	}
	ac := client(t, audit)
	n, err := ac.Node(ctx, audit.ID()) // proven read through the audit node
	if err != nil || n.Kind != NodeKind_NODE_AUDIT {
		t.Fatalf("audit node record via audit node: %v %v", n, err)
	}
	// Compare app hashes at one height through both nodes' headers. The
	// audit node can store a block before the validator's store counts
	// it (CI: "height 14 must be less than or equal to the current
	// blockchain height 13"): both must have it.
	target := h + 1
	if err := val.WaitForHeight(ctx, target); err != nil {
		t.Fatalf("validator at height %d: %v", target, err)
	}
	cv, err := c.RPC().Commit(ctx, &target)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ac.RPC().Commit(ctx, &target)
	if err != nil {
		t.Fatal(err)
	}
	if string(cv.AppHash) != string(ca.AppHash) {
		t.Fatalf("app hash at %d: validator %X, audit %X", target, cv.AppHash, ca.AppHash)
	}

	// It cannot vote: it holds no voting power and signs no commit.
	isVal, err := audit.IsValidator(ctx)
	if err != nil || isVal {
		t.Fatalf("audit node in validator set: %v %v", isVal, err)
	}
	for _, s := range ca.Commit.Signatures {
		if s.ValidatorAddress.String() == auditConsensusAddress(t, audit) {
			t.Fatal("audit node signed a commit")
		}
	}
	// And an auditor cannot govern, even through the audit node.
	_, err = ac.Submit(ctx, aud, &MsgApplyPipe{Id: "px", SourceContract: "c", DestinationOrg: "org-2", DestinationSubchain: "s"})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "auditor") {
		t.Fatalf("auditor tx: %v", err)
	}
	// A governor's tx sent through the audit node is relayed to the validators.
	submit(ctx, t, ac, crypto.DevSigner("gov-org-2"), &MsgRegisterNode{Id: strings.Repeat("0c", 20), Kind: NodeKind_NODE_AUDIT})
}

func auditConsensusAddress(t *testing.T, n *LocalNode) string {
	t.Helper()
	pub, err := n.cmt.PrivValidator().GetPubKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub.Address().String()
}

func TestQueryProof(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a CometBFT node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, nodes := startTestnet(t, 1, 0)
	c := client(t, nodes[0])
	submit(ctx, t, c, crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"})

	// A proven read works, and a proven absence is ErrNoRecord.
	org, err := c.Org(ctx, "org-x")
	if err != nil || org.Status != OrgStatus_ORG_PENDING {
		t.Fatalf("org-x: %v %v", org, err)
	}
	if _, err := c.Org(ctx, "org-none"); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("missing org: %v", err)
	}

	// Tampering: take a real response and proof, change value, key, proof or root.
	res, err := c.RPC().ABCIQueryWithOptions(ctx, QueryKey, KeyOrg("org-x"), rpcOpts(true))
	if err != nil {
		t.Fatal(err)
	}
	r := res.Response
	appHash, err := c.appHashAfter(ctx, r.Height)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProof(appHash, KeyOrg("org-x"), r.Value, r.ProofOps); err != nil {
		t.Fatalf("genuine proof: %v", err)
	}
	tamperedValue := append([]byte(nil), r.Value...)
	tamperedValue[len(tamperedValue)-1] ^= 1
	ops := *r.ProofOps
	opsCopy := ops
	opsCopy.Ops = append(opsCopy.Ops[:0:0], ops.Ops...)
	data := append([]byte(nil), opsCopy.Ops[0].Data...)
	data[len(data)/2] ^= 0xff
	opsCopy.Ops[0].Data = data
	badRoot := append([]byte(nil), appHash...)
	badRoot[0] ^= 1
	cases := []struct {
		name       string
		root, k, v []byte
		ops        any
	}{
		{"tampered value", appHash, KeyOrg("org-x"), tamperedValue, r.ProofOps},
		{"other key", appHash, KeyOrg("org-y"), r.Value, r.ProofOps},
		{"tampered proof", appHash, KeyOrg("org-x"), r.Value, &opsCopy},
		{"wrong root", badRoot, KeyOrg("org-x"), r.Value, r.ProofOps},
		{"claimed absent", appHash, KeyOrg("org-x"), nil, r.ProofOps},
		{"no proof", appHash, KeyOrg("org-x"), r.Value, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyProof(tc.root, tc.k, tc.v, proofOps(tc.ops)); !errors.Is(err, ErrProof) {
				t.Fatalf("got %v, want ErrProof", err)
			}
		})
	}

	// The block subscription delivers increasing heights.
	bctx, bcancel := context.WithCancel(ctx)
	blocks, err := c.Blocks(bctx)
	if err != nil {
		t.Fatal(err)
	}
	first := <-blocks
	second := <-blocks
	if second <= first {
		t.Fatalf("heights %d then %d", first, second)
	}
	bcancel()
	for range blocks {
	}
}

func TestCacheFollowsChain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a CometBFT node")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, nodes := startTestnet(t, 1, 0)
	c := client(t, nodes[0])
	cache, err := NewCache(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cache.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	x := crypto.DevSigner("x-admin")
	if _, ok := cache.Org("org-x"); ok {
		t.Fatal("org before it exists")
	}
	r := submit(ctx, t, c, x, &MsgApplyOrg{Id: "org-x", Name: "X"})
	if err := cache.WaitFor(ctx, func(k *Cache) bool { _, ok := k.Org("org-x"); return ok }); err != nil {
		t.Fatalf("cache never saw the new org: %v", err)
	}
	if cache.Height() < r.Height {
		t.Fatalf("cache height %d below the tx's %d", cache.Height(), r.Height)
	}
	// The applicant's account is pending: the view does not serve it.
	if _, ok := cache.Account(crypto.SignerAddress(x)); ok {
		t.Fatal("pending account served as trusted")
	}
	voteIn(ctx, t, c, r, []string{"org-1"})
	if err := cache.WaitFor(ctx, func(k *Cache) bool { _, ok := k.Account(crypto.SignerAddress(x)); return ok }); err != nil {
		t.Fatalf("cache never saw the admitted account: %v", err)
	}
	// The view built from change logs equals a fresh proven load.
	checkCacheConsistent(ctx, t, cache)
	h := cache.Height()
	if err := cache.WaitFor(ctx, func(k *Cache) bool { return k.Height() > h+2 }); err != nil {
		t.Fatal("cache does not follow new blocks")
	}
}
