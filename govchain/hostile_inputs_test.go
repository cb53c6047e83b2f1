package govchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtbytes "github.com/cometbft/cometbft/libs/bytes"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain/govchaintest"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// govHostileRow is one attack on the governance chain, in the shape of
// the relay package's hostile-input table: what is sent, the rejection it
// must meet (a sentinel for errors.Is and words the reason must name), and
// what it may change. Tx rows run on the real Application driven block by
// block (CheckTx, FinalizeBlock, Commit, as CometBFT calls them); read rows
// run a client against a real node whose RPC answers are tampered with.
type govHostileRow struct {
	name string
	want error  // errors.Is(rejection, want)
	log  string // words the rejection must name
	// tx builds the attack on a fresh consortium chain and returns its
	// bytes and its sender; everything it commits is the setting, and
	// the state is compared around the attack tx alone.
	tx func(t *testing.T, c *chain) (raw []byte, sender crypto.Address)
	// spent: the tx passed the sender checks, so its nonce is spent by
	// design (app.go: a rejected tx is never replayed into success) and
	// the sender's account differs in its nonce alone. Otherwise nothing
	// at all changes.
	spent bool
	// checkTx: the sender checks refuse it, so CheckTx refuses it too
	// and it never reaches a block through an honest mempool.
	checkTx bool
	// read runs a hostile-read attack against the shared node instead.
	read func(t *testing.T, n *LocalNode) error
}

// TestHostileInputs: governance txs from parties who may not send them,
// replays and spam, and a node that serves forged headers and proofs.
// Each is refused with its code (or ErrUntrusted/ErrProof for reads), and
// the committed state is unchanged except for the nonce the design spends.
// Governance keeps no offender count of its own: the refusal code and
// the unchanged state are the record.
func TestHostileInputs(t *testing.T) {
	leaksBefore := goleak.IgnoreCurrent()
	// Runs last: after the shared node stops. FINDING (reported to the
	// lead): LocalNode.Stop leaves goroutines behind: a pebble DB and a
	// goleveldb DB that CometBFT opened and nobody closes, a WAL
	// autofile, the proxy's killTMOnClientError, and the pruner asleep
	// for 10 s. They are listed here, by name, so that any other leak
	// still fails the test; drop the list once Stop releases them.
	t.Cleanup(func() { goleak.VerifyNone(t, append(nodeStopLeaks(), leaksBefore)...) })
	var node *LocalNode
	sharedNode := func() *LocalNode {
		if node == nil {
			_, nodes := startTestnet(t, 1, 0) // the parent test's cleanup stops it
			node = nodes[0]
		}
		return node
	}

	ccA, ccB := crypto.DevSigner("cc-org-a"), crypto.DevSigner("cc-org-b")
	pending := crypto.DevSigner("org-d-admin")
	rows := []govHostileRow{
		{name: "governance tx from a non-governor (cross-chain account proposes an expulsion)", want: ErrUnauthorized, log: "role cross-chain", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				return c.tx(ccA, &MsgProposeExpelOrg{Org: "org-b", Reason: "takeover"}), crypto.SignerAddress(ccA)
			}},
		{name: "vote from a non-governor", want: ErrUnauthorized, log: "role cross-chain", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				id := proposalID(t, c.ok(crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"}))
				return c.tx(ccA, &MsgVote{ProposalId: id, Approve: true}), crypto.SignerAddress(ccA)
			}},
		{name: "double vote", want: ErrDoubleVote, log: "already voted", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				id := proposalID(t, c.ok(crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"}))
				c.ok(gov("org-a"), &MsgVote{ProposalId: id, Approve: true})
				return c.tx(gov("org-a"), &MsgVote{ProposalId: id, Approve: true}), crypto.SignerAddress(gov("org-a"))
			}},
		{name: "vote after the deadline", want: ErrBadState, log: "already expired", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				id := proposalID(t, c.ok(crypto.DevSigner("x-admin"), &MsgApplyOrg{Id: "org-x", Name: "X"}))
				for range 21 { // the genesis VotingPeriod is 20 blocks
					c.block()
				}
				return c.tx(gov("org-b"), &MsgVote{ProposalId: id, Approve: true}), crypto.SignerAddress(gov("org-b"))
			}},
		{name: "nonce replay of a committed tx", want: ErrBadNonce, log: "replayed", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				raw := c.tx(gov("org-a"), &MsgSuspendPipe{Id: "p1", Reason: "maintenance"})
				if r := c.block(raw).TxResults[0]; r.Code != CodeOK {
					t.Fatalf("setting: %d %s", r.Code, r.Log)
				}
				c.ok(gov("org-a"), &MsgResumePipe{Id: "p1"})
				return raw, crypto.SignerAddress(gov("org-a")) // would suspend p1 again
			}},
		{name: "account acting before its admission", want: ErrUnauthorized, log: "pending", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				c.ok(pending, &MsgApplyOrg{Id: "org-d", Name: "D"})
				return c.tx(pending, &MsgRegisterService{RelayId: "relay-org-d", Address: "127.0.0.1:1", TlsCertSha256: fp, Account: addr(pending)}),
					crypto.SignerAddress(pending)
			}},
		{name: "apply-org spam beyond max_open_applications", want: ErrLimit, log: "max_open_applications",
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				spam := make([][]byte, 0, DefaultMaxOpenApplications)
				for i := range DefaultMaxOpenApplications {
					spam = append(spam, c.tx(crypto.DevSigner(fmt.Sprintf("spam-%d", i)), &MsgApplyOrg{Id: fmt.Sprintf("org-s%d", i), Name: "S"}))
				}
				for i, r := range c.block(spam...).TxResults {
					if r.Code != CodeOK {
						t.Fatalf("application %d within the bound: %d %s", i, r.Code, r.Log)
					}
				}
				last := crypto.DevSigner("spam-last")
				return c.tx(last, &MsgApplyOrg{Id: "org-s-last", Name: "S"}), crypto.SignerAddress(last)
			}},
		{name: "apply-org spam by one applicant (second open application)", want: ErrLimit, log: "max_applications_per_applicant", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				x := crypto.DevSigner("x-admin")
				c.ok(x, &MsgApplyOrg{Id: "org-x", Name: "X"})
				return c.tx(x, &MsgApplyOrg{Id: "org-x2", Name: "X2"}), crypto.SignerAddress(x)
			}},
		{name: "forged tx signature", want: ErrBadSignature, log: "signature", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				raw := c.tx(gov("org-a"), &MsgSuspendPipe{Id: "p1"})
				var tx Tx
				if err := proto.Unmarshal(raw, &tx); err != nil {
					t.Fatal(err)
				}
				tx.Signature[0] ^= 0x80
				out, err := proto.Marshal(&tx)
				if err != nil {
					t.Fatal(err)
				}
				return out, crypto.SignerAddress(gov("org-a"))
			}},
		{name: "tx signed for another chain", want: ErrWrongChain, log: "chain", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				raw, err := NewTx(gov("org-a"), "other-chain", c.nonces[crypto.SignerAddress(gov("org-a"))]+1, Wrap(&MsgSuspendPipe{Id: "p1"}))
				if err != nil {
					t.Fatal(err)
				}
				return raw, crypto.SignerAddress(gov("org-a"))
			}},
		{name: "tx from a key that is no account", want: ErrUnknownSender, log: "not on chain", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				m := crypto.DevSigner("mallory")
				return c.tx(m, &MsgSuspendPipe{Id: "p1"}), crypto.SignerAddress(m)
			}},
		{name: "revoked account acting", want: ErrRevoked, log: "revoked at height", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				c.ok(gov("org-b"), &MsgRevokeAccount{Account: addr(ccB), Reason: "key leaked"})
				return c.tx(ccB, &MsgConfirmBatches{Batches: []*BatchRef{{FromRelay: "relay-org-b", BatchSeq: 1}}}), crypto.SignerAddress(ccB)
			}},
		{name: "rotated-out key used after its rotation height", want: ErrStaleKey, log: "rotated this key away", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				c.ok(ccA, c.rotation(addr(ccA), crypto.DevSigner("cc-org-a-2")))
				return c.tx(ccA, &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-b", BatchSeq: 1,
					MerkleRoot: root(1), Count: 1, Ranges: []*PipeRange{{Pipe: "p1", First: 1, Last: 1}}}}}), crypto.SignerAddress(ccA)
			}},
		{name: "oversized tx", want: ErrTooLarge, log: "limit", checkTx: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				return c.tx(gov("org-a"), &MsgSuspendPipe{Id: "p1", Reason: strings.Repeat("r", DefaultMaxTxBytes)}), crypto.SignerAddress(gov("org-a"))
			}},
		{name: "receipt anchor for a batch never sent", want: ErrNotFound, log: "has not anchored this batch", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				return c.tx(ccB, &MsgAnchorReceipts{Batches: []*BatchReceipts{{FromRelay: "relay-org-a", BatchSeq: 9, ReceiptRoot: root(9), Statuses: []byte{1}}}}),
					crypto.SignerAddress(ccB)
			}},
		{name: "receipt anchor by a relay the batch does not go to", want: ErrUnauthorized, log: "relay-org-b", spent: true,
			tx: func(t *testing.T, c *chain) ([]byte, crypto.Address) {
				c.ok(ccA, &MsgOpenBatches{Batches: []*BatchOpen{{FromRelay: "relay-org-a", ToRelay: "relay-org-b", BatchSeq: 1,
					MerkleRoot: root(1), Count: 1, Ranges: []*PipeRange{{Pipe: "p1", First: 1, Last: 1}}}}})
				// The source relay answers for the destination: a REJECTED
				// receipt that would let it roll back.
				return c.tx(ccA, &MsgAnchorReceipts{Batches: []*BatchReceipts{{FromRelay: "relay-org-a", BatchSeq: 1, ReceiptRoot: root(2), Statuses: []byte{byte(amdp.StatusRejected)}}}}),
					crypto.SignerAddress(ccA)
			}},
		{name: "list beyond 10 000 items from a node that hides the rest", want: errListHidden, log: "sent none",
			read: func(t *testing.T, _ *LocalNode) error { return hostileList(t) }},
		{name: "governance node serving a forged header", want: ErrUntrusted, log: "trust root",
			read: func(t *testing.T, n *LocalNode) error { return forgedRead(t, n, true) }},
		{name: "governance node serving a forged proof", want: ErrProof, log: "proof",
			read: func(t *testing.T, n *LocalNode) error { return forgedRead(t, n, false) }},
		// More rows go here, in the same shape.
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if row.read != nil {
				if testing.Short() {
					t.Skip("starts a CometBFT node")
				}
				err := row.read(t, sharedNode())
				if !errors.Is(err, row.want) || !strings.Contains(err.Error(), row.log) {
					t.Fatalf("got %v; want %v naming %q", err, row.want, row.log)
				}
				t.Logf("refused: %v", err)
				return
			}
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
			c := newMemChain(t)
			c.withPipe()
			raw, sender := row.tx(t, c)
			before := hostileSnapshot(t, c)
			ct, err := c.app.CheckTx(context.Background(), &abci.CheckTxRequest{Tx: raw})
			if err != nil {
				t.Fatal(err)
			}
			r := c.block(raw).TxResults[0]
			got := TxErrorFromResult(r.Code, r.Log)
			if !errors.Is(got, row.want) || !strings.Contains(r.Log, row.log) {
				t.Fatalf("FinalizeBlock: code %d %q; want %v naming %q", r.Code, r.Log, row.want, row.log)
			}
			if row.checkTx {
				if cerr := TxErrorFromResult(ct.Code, ct.Log); !errors.Is(cerr, row.want) {
					t.Fatalf("CheckTx let it into the mempool: code %d %q", ct.Code, ct.Log)
				}
			}
			hostileUnchanged(t, before, hostileSnapshot(t, c), sender, row.spent)
			t.Logf("refused: code %d: %s", r.Code, r.Log)
		})
	}
}

// hostileSnapshot is every committed key and value.
func hostileSnapshot(t *testing.T, c *chain) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	c.app.committed.IterateRange(nil, nil, true, func(k, v []byte) bool {
		out[string(k)] = append([]byte(nil), v...)
		return false
	})
	return out
}

// hostileUnchanged compares the state around an attack: only the block's
// change log may differ, and, when the nonce is spent, the sender's
// account in its nonce alone.
func hostileUnchanged(t *testing.T, before, after map[string][]byte, sender crypto.Address, spent bool) {
	t.Helper()
	acctKey := string(KeyAccount(sender))
	for k := range mergeKeys(before, after) {
		b, a := before[k], after[k]
		if bytes.Equal(b, a) || k == keyChanges {
			continue
		}
		if k == acctKey && spent && b != nil && a != nil {
			var x, y Account
			if err := proto.Unmarshal(b, &x); err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(a, &y); err != nil {
				t.Fatal(err)
			}
			if y.Nonce <= x.Nonce {
				t.Errorf("sender's nonce went from %d to %d", x.Nonce, y.Nonce)
			}
			x.Nonce, y.Nonce = 0, 0
			if proto.Equal(&x, &y) {
				continue
			}
		}
		t.Errorf("the refused tx changed %q: %x -> %x", k, b, a)
	}
}

func mergeKeys(a, b map[string][]byte) map[string]struct{} {
	out := map[string]struct{}{}
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}

// errListHidden marks the list reader's refusal of a page that says more
// follow and carries none: a node that would end a long list early
// without saying so.
var errListHidden = errors.New("list page hides the rest")

// hostileList fills a list past the page size (10 000), checks that the
// honest node's pages give every item, then has the node answer a page as
// "more follow" with no items: the reader refuses rather than end early.
func hostileList(t *testing.T) error {
	c := newMemChain(t)
	const n = listPageSize + 5
	for i := range n {
		b, _ := marshal.Marshal(&Org{Id: fmt.Sprintf("h%06d", i)})
		if _, err := c.app.tree.Set([]byte(fmt.Sprintf("%s%06d", ListOrgs, i)), b); err != nil {
			t.Fatal(err)
		}
	}
	c.block()
	pages := 0
	honest := func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		pages++
		r, err := c.app.Query(ctx, &abci.QueryRequest{Path: QueryList, Data: req})
		if err != nil {
			return 0, "", nil, err
		}
		return r.Code, r.Log, r.Value, nil
	}
	orgs, err := listPages(context.Background(), ListOrgs, func() *Org { return &Org{} }, honest)
	if err != nil || len(orgs) != n+3 || pages < 2 {
		t.Fatalf("honest list: %d orgs in %d pages, %v; want %d", len(orgs), pages, err, n+3)
	}
	hiding := func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		code, log, v, err := honest(ctx, req)
		var lr ListResult
		if err == nil && proto.Unmarshal(v, &lr) == nil && lr.Truncated {
			lr.Items = nil // "more follow", and none sent
			v, _ = proto.Marshal(&lr)
		}
		return code, log, v, err
	}
	_, err = listPages(context.Background(), ListOrgs, func() *Org { return &Org{} }, hiding)
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errListHidden, err)
}

// forgedRead points an anchored client at the node through a tamperer,
// which then forges a header (re-signed by a validator set of its own) or
// a query proof; the client and the relays' cache refuse either.
func forgedRead(t *testing.T, n *LocalNode, header bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := genesisRoot(t, n)
	honest := client(t, n)
	if _, err := honest.Org(ctx, "org-hostile"); errors.Is(err, ErrNoRecord) {
		submit(ctx, t, honest, crypto.DevSigner("hostile-admin"), &MsgApplyOrg{Id: "org-hostile", Name: "H"})
	}
	tp := govchaintest.NewTamper(n.RPC())
	c, err := NewClient(ctx, tp, WithTrustRoot(root), WithCommitTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if header {
		tp.OnCommit(func(res *ctypes.ResultCommit) { res.SignedHeader.Header.AppHash = make([]byte, 32) })
	} else {
		tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
			if res.Response.ProofOps != nil && len(res.Response.ProofOps.Ops) > 0 {
				d := res.Response.ProofOps.Ops[0].Data
				d[len(d)/2] ^= 0xff
			}
		})
	}
	o, err := c.Org(ctx, "org-hostile")
	if err == nil {
		t.Errorf("forged read believed: %v", o)
		return nil
	}
	// Nothing from the lying node reaches the relays' view either.
	if _, cerr := NewCache(ctx, c, nil); cerr == nil {
		t.Errorf("the cache loaded from a lying node (the read refused with %v)", err)
	}
	return err
}

// nodeStopLeaks are the goroutines that LocalNode.Stop is known to leave
// (see TestHostileInputs and StopLeftovers).
func nodeStopLeaks() []goleak.Option {
	var out []goleak.Option
	for _, f := range StopLeftovers() {
		out = append(out, goleak.IgnoreAnyFunction(f))
	}
	return out
}
