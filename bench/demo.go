package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// DemoOptions configures RunDemo.
type DemoOptions struct {
	Out io.Writer // progress and the human summary; nil discards
	// BulkTxs is the size of the governance throughput burst (0: skip it).
	BulkTxs int
	// KeepRunning keeps the node up after the summary until ctx ends.
	KeepRunning bool
	// RPCPort, if set, is where the node's RPC listens (for `ccgp gov`).
	RPCPort int
}

// DemoSummary is the demo's result; `ccgp demo --json` prints it.
type DemoSummary struct {
	ChainID        string  `json:"chain_id"`
	Validators     int     `json:"validators"`
	GenesisOrgs    int     `json:"genesis_orgs"`
	Orgs           int     `json:"orgs"`
	Accounts       int     `json:"accounts"`
	Services       int     `json:"services"`
	Subchains      int     `json:"subchains"`
	Pipes          int     `json:"pipes"`
	ActivePipes    int     `json:"active_pipes"`
	SetupTxs       int     `json:"setup_txs"`
	RejectedShown  int     `json:"rejected_shown"`
	ProofsVerified int     `json:"proofs_verified"`
	Height         int64   `json:"height"`
	AppHash        string  `json:"app_hash"`
	BulkTxs        int     `json:"bulk_txs"`
	BulkTxPerSec   float64 `json:"bulk_tx_per_s"`
	DurationS      float64 `json:"duration_s"`
	RPC            string  `json:"rpc"`
}

// DemoParticipants is the demo consortium: three genesis orgs and one that
// applies for membership, each with a relay, a subchain, an app and a
// contract.
func DemoParticipants() []govchain.Participant {
	orgs := []struct{ org, name string }{{"org-1", ""}, {"org-2", ""}, {"org-3", ""}, {"org-4", "Logistics Co"}}
	out := make([]govchain.Participant, len(orgs))
	for i, o := range orgs {
		admin := crypto.DevSigner("gov-" + o.org)
		if o.name != "" {
			admin = crypto.DevSigner("admin-" + o.org)
		}
		out[i] = govchain.Participant{Org: o.org, OrgName: o.name, Admin: admin,
			Relay: "relay-" + o.org, Address: fmt.Sprintf("127.0.0.1:%d", 7101+i), RelayKey: crypto.DevSigner("relay-" + o.org),
			Subchain: "chain-" + o.org, Kind: "simchain", App: "app-" + o.org, AppKey: crypto.DevSigner("app-" + o.org),
			Contract: "ct-" + o.org}
	}
	return out
}

// RunDemo starts a one-validator governance chain in-process (three genesis
// orgs, development keys), sets up a consortium through governance —
// membership by vote, accounts by vote, relays, subchains, apps, contracts,
// pipes applied for and authorized, a pipe suspended and resumed, rejected
// txs with their reasons — reads the result back with verified proofs,
// measures a burst of governance txs, and summarises.
func RunDemo(ctx context.Context, opts DemoOptions) (*DemoSummary, error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%5.1fs] "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}

	dir, err := os.MkdirTemp("", "ccgp-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	base := 0
	if opts.RPCPort > 0 {
		base = opts.RPCPort - 1
	}
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: dir, ChainID: "ccgp-demo", Validators: 1, GenesisOrgs: 3,
		BasePort: base, BlockInterval: 100 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	node, err := govchain.StartNode(ctx, tn.Nodes[0].Home, nil)
	if err != nil {
		return nil, err
	}
	defer node.Stop()
	c, err := node.Client()
	if err != nil {
		return nil, err
	}
	if err := c.WaitReady(ctx); err != nil {
		return nil, err
	}
	say("governance chain %s up: 1 validator, genesis orgs %v, RPC %s", tn.ChainID, tn.Orgs, tn.Nodes[0].RPC)

	var governors []crypto.Signer
	for _, o := range tn.Orgs {
		governors = append(governors, crypto.DevSigner("gov-"+o))
	}
	parts := DemoParticipants()
	spec := govchain.ConsortiumSpec{Governors: governors, Participants: parts, Pipes: []govchain.PipeSpec{
		{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
		{ID: "pipe-2-4", From: "org-2", To: "org-4", Mode: govchain.ConsistencyMode_MODE_STRICT},
		{ID: "pipe-4-1", From: "org-4", To: "org-1", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
		{ID: "pipe-3-1", From: "org-3", To: "org-1", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC},
	}}
	setupTxs, err := govchain.SetupConsortium(ctx, c, spec, func(s string) { say("%s", s) })
	if err != nil {
		return nil, err
	}
	sum := &DemoSummary{ChainID: tn.ChainID, Validators: 1, GenesisOrgs: len(tn.Orgs), SetupTxs: setupTxs, RPC: tn.Nodes[0].RPC}

	// Governance refuses what it must, in words.
	rejections := []govchain.Signed{
		{Signer: parts[2].Admin, Msg: &govchain.MsgAuthorizePipe{Id: "pipe-1-2", DestinationContract: "ct-org-3"}},
		{Signer: parts[0].AppKey, Msg: &govchain.MsgRegisterSubchain{Id: "rogue", Kind: "simchain", RelayId: "relay-org-1"}},
		{Signer: crypto.DevSigner("stranger"), Msg: &govchain.MsgSuspendPipe{Id: "pipe-1-2"}},
	}
	for _, r := range rejections {
		if _, err := c.Submit(ctx, r.Signer, r.Msg); err != nil {
			var te *govchain.TxError
			if !errors.As(err, &te) {
				return nil, err
			}
			sum.RejectedShown++
			say("rejected as it must be: %s", te.Msg)
		} else {
			return nil, fmt.Errorf("demo: %T was accepted but must be rejected", r.Msg)
		}
	}

	// Suspend and resume a pipe.
	if _, err := c.Submit(ctx, governors[2], &govchain.MsgSuspendPipe{Id: "pipe-2-4", Reason: "demo: audit hold"}); err != nil {
		return nil, err
	}
	p, err := c.Pipe(ctx, "pipe-2-4")
	if err != nil {
		return nil, err
	}
	say("pipe-2-4 suspended by org-3's governor (%s), status %s", p.StatusReason, short(p.Status.String()))
	if _, err := c.Submit(ctx, parts[3].Admin, &govchain.MsgResumePipe{Id: "pipe-2-4"}); err != nil {
		return nil, err
	}

	// Read everything back with proofs.
	for _, ps := range spec.Pipes {
		p, err := c.Pipe(ctx, ps.ID)
		if err != nil {
			return nil, err
		}
		sum.ProofsVerified++
		sum.Pipes++
		if p.Status == govchain.PipeStatus_PIPE_ACTIVE {
			sum.ActivePipes++
		}
		say("pipe %-9s %s -> %s  %-9s %-10s source key %x… (proof verified)", p.Id, p.Source.Contract, p.Destination.Contract,
			short(p.Status.String()), short(p.Mode.String()), p.Source.PublicKey[:6])
	}
	org4, err := c.Org(ctx, "org-4")
	if err != nil {
		return nil, err
	}
	sum.ProofsVerified++
	say("org-4 (%s) is %s since height %d (proof verified)", org4.Name, short(org4.Status.String()), org4.SinceHeight)

	counts := []struct {
		prefix string
		n      *int
	}{{govchain.ListOrgs, &sum.Orgs}, {govchain.ListAccounts, &sum.Accounts}, {govchain.ListServices, &sum.Services}, {govchain.ListSubchains, &sum.Subchains}}
	for _, ct := range counts {
		items, err := govchain.List(ctx, c, ct.prefix, func() *govchain.KV { return &govchain.KV{} })
		if err != nil {
			return nil, err
		}
		*ct.n = len(items)
	}

	if opts.BulkTxs > 0 {
		say("governance throughput: %d txs handed to the mempool at once …", opts.BulkTxs)
		r, err := bulk(ctx, c, tn.ChainID, opts.BulkTxs)
		if err != nil {
			return nil, err
		}
		sum.BulkTxs, sum.BulkTxPerSec = r.Committed, r.TxPerSecond
		say("%d txs committed in %.2fs over %d blocks: %.0f tx/s", r.Committed, r.Seconds, r.Blocks, r.TxPerSecond)
	}

	sum.Height = node.Height()
	sum.AppHash = fmt.Sprintf("%X", node.AppHash())
	sum.DurationS = time.Since(start).Seconds()
	if opts.KeepRunning {
		say("running; govern with: ccgp gov pipe list --node %s   (Ctrl-C stops)", tn.Nodes[0].RPC)
		<-ctx.Done()
	}
	return sum, nil
}

func short(enum string) string {
	for i := 0; i < len(enum); i++ {
		if enum[i] == '_' {
			enum = enum[i+1:]
			break
		}
	}
	b := []byte(enum)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}
