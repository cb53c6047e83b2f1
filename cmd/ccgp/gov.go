package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// govFlags are shared by every 'ccgp gov' command.
type govFlags struct {
	*globals
	node    string
	from    string
	output  string
	timeout time.Duration
	trust   trustFlags
}

// trustFlags name the governance chain's trust root.
type trustFlags struct {
	genesis, chainID, hash string
	height                 int64
}

func (t *trustFlags) add(fs *pflag.FlagSet, prefix string) {
	fs.StringVar(&t.genesis, prefix+"genesis", os.Getenv("CCGP_GENESIS"), "the governance chain's genesis.json: reads verify from its chain id and validators (env CCGP_GENESIS)")
	fs.StringVar(&t.chainID, prefix+"chain-id", "", "with --"+prefix+"trust-height and --"+prefix+"trust-hash: the governance chain id")
	fs.Int64Var(&t.height, prefix+"trust-height", 0, "height of a header you trust (instead of the genesis)")
	fs.StringVar(&t.hash, prefix+"trust-hash", "", "hex hash of the header at --"+prefix+"trust-height")
}

// options turns the flags into client options; with none set the reads are
// not anchored and it says so on stderr.
func (t *trustFlags) options() ([]govchain.ClientOption, error) {
	return trustOptions(t.genesis, t.chainID, t.height, t.hash)
}

func trustOptions(genesis, chainID string, height int64, hash string) ([]govchain.ClientOption, error) {
	switch {
	case genesis != "" && (height != 0 || hash != ""):
		return nil, usagef("give the governance genesis or a trusted height and hash, not both")
	case genesis != "":
		r, err := govchain.TrustRootFromGenesis(genesis)
		if err != nil {
			return nil, err
		}
		return []govchain.ClientOption{govchain.WithTrustRoot(r)}, nil
	case height != 0 || hash != "" || chainID != "":
		r, err := govchain.TrustRootFromHeader(chainID, height, hash)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return []govchain.ClientOption{govchain.WithTrustRoot(r)}, nil
	}
	fmt.Fprintln(os.Stderr, "warning: governance reads are not anchored to a trust root (development only): pass --genesis, or --chain-id with --trust-height and --trust-hash")
	return nil, nil
}

func (f *govFlags) client(ctx context.Context) (*govchain.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usagef("unknown output format %q: use table or json", f.output)
	}
	opts, err := f.trust.options()
	if err != nil {
		return nil, err
	}
	return govchain.Dial(ctx, f.node, append(opts, govchain.WithCommitTimeout(f.timeout))...)
}

func newGovCmd(g *globals) *cobra.Command {
	f := &govFlags{globals: g}
	cmd := &cobra.Command{
		Use:   "gov",
		Short: "Send governance txs and read the governance chain",
		Long: `Send governance txs and read proven state from the governance chain.

Every tx is signed by --from (a key in HOME/keys) and waits until it is
committed; a rejection prints the chain's reason. Every 'show' verifies an
ICS-23 proof against the app hash of a header verified from the trust root:
--genesis (the chain's genesis.json), or --chain-id, --trust-height and
--trust-hash. A node whose chain or headers do not verify is refused.

Membership flow:
  ccgp gov org apply org-x --name "Org X" --from x-admin   applicant's new key
  ccgp gov vote 1 yes --from gov-org-1                      each genesis org
Pipe flow:
  ccgp gov pipe apply p1 --source-contract ct-a --dest-org org-b --dest-subchain chain-b --from gov-org-1
  ccgp gov pipe authorize p1 --dest-contract ct-b --from gov-org-2
When a party misbehaves:
  ccgp gov account revoke relay-x --reason "key leaked" --from x-admin      own org: at once
  ccgp gov account revoke 3f1c...9a --from gov-org-1                        another org: a vote
  ccgp gov org expel org-x --reason "fraud" --from gov-org-1                a vote
  ccgp gov account rotate-key --new-key relay-x-2 --from relay-x           move to a new key
  ccgp gov service update relay-x --address 10.0.0.5:7001 --tls-fingerprint 9f86... --from x-admin`,
	}
	f.addFlags(cmd)

	cmd.AddCommand(f.voteCmd(), f.paramsCmd())
	for _, k := range kinds {
		cmd.AddCommand(f.kindCmd(k))
	}
	return cmd
}

// addFlags puts the shared governance flags on cmd (and its children).
func (f *govFlags) addFlags(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	nodeDefault := os.Getenv("CCGP_NODE")
	if nodeDefault == "" {
		nodeDefault = "127.0.0.1:26657"
	}
	pf.StringVar(&f.node, "node", nodeDefault, "RPC address of a governance node (env CCGP_NODE)")
	pf.StringVar(&f.from, "from", "", "name of the signing key in HOME/keys (txs only)")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for a tx to commit")
	f.trust.add(pf, "")
}

// submit signs and sends m, then prints the outcome. A key that was
// rotated onto an account (its own address is no account) sends for that
// account, naming it in the tx.
func (f *govFlags) submit(c *cobra.Command, m proto.Message) error {
	ctx := c.Context()
	s, err := f.signer(f.from)
	if err != nil {
		return err
	}
	cl, err := f.client(ctx)
	if err != nil {
		return err
	}
	res, err := cl.Submit(ctx, s, m)
	if errors.Is(err, govchain.ErrUnknownSender) {
		if acct, a, aerr := cl.AccountByKey(ctx, crypto.SignerAddress(s)); aerr == nil && acct != crypto.SignerAddress(s) {
			res, err = submitAs(ctx, cl, s, acct, a.Nonce+1, m)
		}
	}
	return f.printResult(res, err)
}

// submitAs sends m signed by s for account with nonce: for rotated
// accounts, and for rotate-key, whose message depends on the nonce.
func submitAs(ctx context.Context, cl *govchain.Client, s crypto.Signer, account crypto.Address, nonce uint64, m proto.Message) (*govchain.TxResult, error) {
	body := govchain.Wrap(m)
	if account != crypto.SignerAddress(s) {
		body.Account = account[:]
	}
	raw, err := govchain.NewTx(s, cl.ChainID(), nonce, body)
	if err != nil {
		return nil, err
	}
	hash, err := cl.BroadcastRaw(ctx, s, raw)
	if err != nil {
		return nil, err
	}
	return cl.WaitTx(ctx, hash)
}

// printResult prints a committed tx's outcome, or its rejection.
func (f *govFlags) printResult(res *govchain.TxResult, err error) error {
	if err != nil {
		var te *govchain.TxError
		if errors.As(err, &te) {
			return fmt.Errorf("rejected: %s", te.Msg)
		}
		return err
	}
	if f.output == "json" {
		type ev struct {
			Type  string            `json:"type"`
			Attrs map[string]string `json:"attributes"`
		}
		out := struct {
			Height int64  `json:"height"`
			Hash   string `json:"hash"`
			Events []ev   `json:"events"`
		}{Height: res.Height, Hash: strings.ToUpper(hex.EncodeToString(res.Hash))}
		for _, e := range res.Events {
			out.Events = append(out.Events, ev{e.Type, e.Attrs})
		}
		return writeJSON(out)
	}
	fmt.Printf("committed at height %d (tx %X)\n", res.Height, res.Hash)
	for _, e := range res.Events {
		switch e.Type {
		case "proposal":
			fmt.Printf("proposal %s opened: %s %s; the genesis orgs vote with 'ccgp gov vote %s yes|no'\n", e.Attrs["id"], e.Attrs["kind"], e.Attrs["subject"], e.Attrs["id"])
		case "proposal_decided":
			fmt.Printf("proposal %s %s\n", e.Attrs["id"], e.Attrs["status"])
		case "pipe":
			if e.Attrs["key_rotated"] != "" {
				fmt.Printf("pipe %s endpoint takes account %s's new key\n", e.Attrs["id"], e.Attrs["key_rotated"])
			} else if e.Attrs["reason"] != "" {
				fmt.Printf("pipe %s is %s (%s)\n", e.Attrs["id"], e.Attrs["status"], e.Attrs["reason"])
			} else {
				fmt.Printf("pipe %s is %s\n", e.Attrs["id"], e.Attrs["status"])
			}
		case "account":
			if e.Attrs["key_height"] != "" {
				fmt.Printf("account %s uses its new key from height %s; the old key is refused\n", e.Attrs["address"], e.Attrs["key_height"])
			} else {
				fmt.Printf("account %s of org %s is %s\n", e.Attrs["address"], e.Attrs["org"], e.Attrs["status"])
			}
		case "service":
			fmt.Printf("service %s of org %s is %s\n", e.Attrs["relay"], e.Attrs["org"], e.Attrs["status"])
		case "org":
			fmt.Printf("org %s is %s\n", e.Attrs["id"], e.Attrs["status"])
		}
	}
	return nil
}

func (f *govFlags) voteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "vote PROPOSAL_ID yes|no",
		Short:   "Vote on a proposal (governors of genesis orgs)",
		Example: "  ccgp gov vote 3 yes --from gov-org-1",
		Args:    exactArgs("PROPOSAL_ID", "yes|no"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return usagef("proposal id %q is not a number", args[0])
			}
			var approve bool
			switch strings.ToLower(args[1]) {
			case "yes", "y", "approve":
				approve = true
			case "no", "n", "reject":
			default:
				return usagef("vote must be yes or no, not %q", args[1])
			}
			return f.submit(c, &govchain.MsgVote{ProposalId: id, Approve: approve})
		},
	}
}

func (f *govFlags) paramsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "params",
		Short: "Show the governance parameters (proven)",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			return f.show(c, kind{name: "params", cols: []string{"quorum_num", "quorum_den", "voting_period", "max_tx_bytes", "max_open_applications", "max_applications_per_applicant",
				"credit_restrict", "credit_expel", "credit_restricted_rate", "credit_min_auditors"},
				newT: func() proto.Message { return &govchain.Params{} }}, govchain.KeyParams(), "params")
		},
	}
}

// kind describes one record type for show/list and its tx subcommands.
type kind struct {
	name   string
	plural string
	prefix string
	cols   []string
	newT   func() proto.Message
	key    func(arg string) ([]byte, error)
	txs    func(f *govFlags) []*cobra.Command
}

func idKey(fn func(string) []byte) func(string) ([]byte, error) {
	return func(s string) ([]byte, error) { return fn(s), nil }
}

var kinds = []kind{
	{name: "org", plural: "orgs", prefix: govchain.ListOrgs, cols: []string{"id", "name", "status", "genesis", "since_height"},
		newT: func() proto.Message { return &govchain.Org{} }, key: idKey(govchain.KeyOrg), txs: orgTxs},
	{name: "account", plural: "accounts", prefix: govchain.ListAccounts, cols: []string{"address", "org", "role", "status", "nonce", "key_height", "name"},
		newT: func() proto.Message { return &govchain.Account{} }, txs: accountTxs,
		key: func(s string) ([]byte, error) {
			a, err := crypto.ParseAddress(s)
			if err != nil {
				return nil, usageError{err}
			}
			return govchain.KeyAccount(a), nil
		}},
	{name: "proposal", plural: "proposals", prefix: govchain.ListProposals, cols: []string{"id", "kind", "subject", "status", "tally", "deadline_height"},
		newT: func() proto.Message { return &govchain.Proposal{} },
		key: func(s string) ([]byte, error) {
			id, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, usagef("proposal id %q is not a number", s)
			}
			return govchain.KeyProposal(id), nil
		}},
	{name: "node", plural: "nodes", prefix: govchain.ListNodes, cols: []string{"id", "org", "kind", "status", "power", "p2p_address"},
		newT: func() proto.Message { return &govchain.Node{} }, key: idKey(govchain.KeyNode), txs: nodeTxs},
	{name: "service", plural: "services", prefix: govchain.ListServices, cols: []string{"relay_id", "org", "status", "address", "account", "tls_cert_sha256"},
		newT: func() proto.Message { return &govchain.Service{} }, key: idKey(govchain.KeyService), txs: serviceTxs},
	{name: "subchain", plural: "subchains", prefix: govchain.ListSubchains, cols: []string{"id", "kind", "org", "relay_id"},
		newT: func() proto.Message { return &govchain.Subchain{} }, key: idKey(govchain.KeySubchain), txs: subchainTxs},
	{name: "app", plural: "apps", prefix: govchain.ListApps, cols: []string{"id", "org", "subchain", "account"},
		newT: func() proto.Message { return &govchain.App{} }, key: idKey(govchain.KeyApp), txs: appTxs},
	{name: "contract", plural: "contracts", prefix: govchain.ListContracts, cols: []string{"id", "org", "app", "subchain", "address"},
		newT: func() proto.Message { return &govchain.Contract{} }, key: idKey(govchain.KeyContract), txs: contractTxs},
	{name: "pipe", plural: "pipes", prefix: govchain.ListPipes, cols: []string{"id", "status", "mode", "source.org", "source.contract", "destination.org", "destination.contract", "limits.max_payload"},
		newT: func() proto.Message { return &govchain.Pipe{} }, key: idKey(govchain.KeyPipe), txs: pipeTxs},
}

func (f *govFlags) kindCmd(k kind) *cobra.Command {
	cmd := &cobra.Command{Use: k.name, Short: fmt.Sprintf("%s: show, list and txs", strings.ToUpper(k.plural[:1])+k.plural[1:])}
	show := &cobra.Command{
		Use:   "show ID",
		Short: fmt.Sprintf("Show one %s, with its proof verified", k.name),
		Args:  exactArgs("ID"),
		RunE: func(c *cobra.Command, args []string) error {
			key, err := k.key(args[0])
			if err != nil {
				return err
			}
			return f.show(c, k, key, k.name+" "+args[0])
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: fmt.Sprintf("List every %s (not proven; 'show' one for a proof)", k.name),
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(c.Context())
			if err != nil {
				return err
			}
			items, err := govchain.List(c.Context(), cl, k.prefix, k.newT)
			if err != nil {
				return err
			}
			rows := make([]map[string]any, len(items))
			for i, m := range items {
				rows[i] = recordMap(m)
			}
			if f.output == "json" {
				return writeJSON(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(os.Stderr, "no %s\n", k.plural)
				return nil
			}
			return printRows(k.cols, rows)
		},
	}
	cmd.AddCommand(show, list)
	if k.txs != nil {
		cmd.AddCommand(k.txs(f)...)
	}
	return cmd
}

func (f *govFlags) show(c *cobra.Command, k kind, key []byte, what string) error {
	cl, err := f.client(c.Context())
	if err != nil {
		return err
	}
	m := k.newT()
	h, err := cl.Get(c.Context(), key, m)
	if errors.Is(err, govchain.ErrNoRecord) {
		return fmt.Errorf("%s does not exist (absence proven at height %d)", what, h)
	}
	if err != nil {
		return err
	}
	row := recordMap(m)
	if f.output == "json" {
		return writeJSON(row)
	}
	if err := printRows(k.cols, []map[string]any{row}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "proof verified against the app hash signed at height %d\n", h+1)
	return nil
}

func printRows(cols []string, rows []map[string]any) error {
	head := make([]string, len(cols))
	for i, c := range cols {
		head[i] = strings.ToUpper(strings.ReplaceAll(c, "_", " "))
	}
	t := newTable(head...)
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = cell(lookup(r, c))
		}
		t.row(cells...)
	}
	return t.flush()
}

func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		return v
	case []any:
		return fmt.Sprint(len(v))
	default:
		return fmt.Sprint(v)
	}
}
