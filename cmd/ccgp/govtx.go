package main

import (
	"encoding/hex"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// address resolves an account given as 40 hex digits or as a key name in
// HOME/keys (its public part; no passphrase needed).
func (f *govFlags) address(s string) ([]byte, error) {
	if s == "" {
		return nil, usagef("an account is required (an address or a key name)")
	}
	if a, err := crypto.ParseAddress(s); err == nil {
		return a[:], nil
	}
	ks, err := f.keystore(false)
	if err != nil {
		return nil, err
	}
	ki, err := ks.Show(s)
	if err != nil {
		return nil, usagef("account %q is neither an address nor a key in %s: %v", s, ks.Dir(), err)
	}
	return ki.Address[:], nil
}

func parseRole(s string) (govchain.Role, error) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "")) {
	case "governor":
		return govchain.Role_ROLE_GOVERNOR, nil
	case "operator":
		return govchain.Role_ROLE_OPERATOR, nil
	case "crosschain":
		return govchain.Role_ROLE_CROSSCHAIN, nil
	case "auditor":
		return govchain.Role_ROLE_AUDITOR, nil
	}
	return 0, usagef("role %q: use governor, operator, cross-chain or auditor", s)
}

func orgTxs(f *govFlags) []*cobra.Command {
	var name, acctName string
	apply := &cobra.Command{
		Use:   "apply ORG_ID",
		Short: "Apply for membership (signed by the applicant's new key)",
		Long: `Apply for membership of the consortium. Sign with a new key: it becomes the
org's first operator account once the genesis orgs admit the org by vote.`,
		Example: "  ccgp keys add x-admin && ccgp gov org apply org-x --name \"Org X\" --from x-admin",
		Args:    exactArgs("ORG_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if name == "" {
				return usagef("--name is required")
			}
			return f.submit(c, &govchain.MsgApplyOrg{Id: args[0], Name: name, AccountName: acctName})
		},
	}
	apply.Flags().StringVar(&name, "name", "", "the org's display name")
	apply.Flags().StringVar(&acctName, "account-name", "", "a label for the applicant's account")
	return []*cobra.Command{apply}
}

func accountTxs(f *govFlags) []*cobra.Command {
	var role, pubHex, keyName, name string
	propose := &cobra.Command{
		Use:   "propose",
		Short: "Propose a new account of your org; it takes effect after the genesis orgs vote",
		Example: "  ccgp gov account propose --role cross-chain --key relay-a --from gov-org-1\n" +
			"  ccgp gov account propose --role auditor --pubkey 3b6a27bc... --from gov-org-1",
		Args: exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := parseRole(role)
			if err != nil {
				return err
			}
			var pub []byte
			switch {
			case pubHex != "" && keyName != "":
				return usagef("give --pubkey or --key, not both")
			case pubHex != "":
				if pub, err = hex.DecodeString(pubHex); err != nil {
					return usagef("--pubkey: %v", err)
				}
			case keyName != "":
				ks, err := f.keystore(false)
				if err != nil {
					return err
				}
				ki, err := ks.Show(keyName)
				if err != nil {
					return err
				}
				pub = ki.PublicKey
			default:
				return usagef("the new account's key is required: --pubkey HEX or --key NAME")
			}
			return f.submit(c, &govchain.MsgProposeAccount{Role: r, Suite: string(crypto.SuiteEd25519), PublicKey: pub, Name: name})
		},
	}
	propose.Flags().StringVar(&role, "role", "", "governor, operator, cross-chain or auditor")
	propose.Flags().StringVar(&pubHex, "pubkey", "", "the new account's Ed25519 public key, hex")
	propose.Flags().StringVar(&keyName, "key", "", "take the public key from this key in HOME/keys")
	propose.Flags().StringVar(&name, "name", "", "a label for the account")
	return []*cobra.Command{propose}
}

func nodeTxs(f *govFlags) []*cobra.Command {
	var kindS, keyHex, p2p string
	reg := &cobra.Command{
		Use:   "register NODE_ID",
		Short: "Register an audit node, or propose a new validator (voted)",
		Example: "  ccgp gov node register 1f0c...e2 --kind audit --p2p 127.0.0.1:26686 --from gov-org-1\n" +
			"  ccgp gov node register 9a1b...07 --kind governance --consensus-key 5c1e... --from gov-org-1",
		Args: exactArgs("NODE_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			m := &govchain.MsgRegisterNode{Id: args[0], P2PAddress: p2p}
			switch kindS {
			case "audit":
				m.Kind = govchain.NodeKind_NODE_AUDIT
			case "governance", "validator":
				m.Kind = govchain.NodeKind_NODE_GOVERNANCE
				k, err := hex.DecodeString(keyHex)
				if err != nil {
					return usagef("--consensus-key: %v", err)
				}
				m.ConsensusPubKey = k
			default:
				return usagef("--kind must be audit or governance")
			}
			return f.submit(c, m)
		},
	}
	reg.Flags().StringVar(&kindS, "kind", "audit", "audit (non-voting) or governance (validator, voted in)")
	reg.Flags().StringVar(&keyHex, "consensus-key", "", "validator's Ed25519 consensus public key, hex")
	reg.Flags().StringVar(&p2p, "p2p", "", "the node's P2P host:port")
	return []*cobra.Command{reg}
}

func serviceTxs(f *govFlags) []*cobra.Command {
	var address, fp, account string
	reg := &cobra.Command{
		Use:     "register RELAY_ID",
		Short:   "Register your org's relay service",
		Example: "  ccgp gov service register relay-a --address 127.0.0.1:7001 --account relay-a-key --from gov-org-1",
		Args:    exactArgs("RELAY_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			acct, err := f.address(account)
			if err != nil {
				return err
			}
			var fpb []byte
			if fp != "" {
				if fpb, err = hex.DecodeString(strings.ReplaceAll(fp, ":", "")); err != nil {
					return usagef("--tls-fingerprint: %v", err)
				}
			}
			return f.submit(c, &govchain.MsgRegisterService{RelayId: args[0], Address: address, TlsCertSha256: fpb, Account: acct})
		},
	}
	reg.Flags().StringVar(&address, "address", "", "the relay's QUIC host:port")
	reg.Flags().StringVar(&fp, "tls-fingerprint", "", "SHA-256 of the relay's TLS certificate, hex")
	reg.Flags().StringVar(&account, "account", "", "the relay's cross-chain account: address or key name")
	return []*cobra.Command{reg}
}

func subchainTxs(f *govFlags) []*cobra.Command {
	var kindS, relay string
	reg := &cobra.Command{
		Use:     "register SUBCHAIN_ID",
		Short:   "Register one of your org's subchains and the relay that serves it",
		Example: "  ccgp gov subchain register chain-a --kind simchain --relay relay-a --from gov-org-1",
		Args:    exactArgs("SUBCHAIN_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgRegisterSubchain{Id: args[0], Kind: kindS, RelayId: relay})
		},
	}
	reg.Flags().StringVar(&kindS, "kind", "simchain", "chain plugin kind")
	reg.Flags().StringVar(&relay, "relay", "", "relay id serving this subchain")
	return []*cobra.Command{reg}
}

func appTxs(f *govFlags) []*cobra.Command {
	var subchain, account string
	reg := &cobra.Command{
		Use:     "register APP_ID",
		Short:   "Register a business app and the cross-chain account that signs its packets",
		Example: "  ccgp gov app register app-a --subchain chain-a --account app-a-key --from gov-org-1",
		Args:    exactArgs("APP_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			acct, err := f.address(account)
			if err != nil {
				return err
			}
			return f.submit(c, &govchain.MsgRegisterApp{Id: args[0], Subchain: subchain, Account: acct})
		},
	}
	reg.Flags().StringVar(&subchain, "subchain", "", "subchain the app runs on")
	reg.Flags().StringVar(&account, "account", "", "the app's cross-chain account: address or key name")
	return []*cobra.Command{reg}
}

func contractTxs(f *govFlags) []*cobra.Command {
	var app, address string
	reg := &cobra.Command{
		Use:     "register CONTRACT_ID",
		Short:   "Register an app's contract",
		Example: "  ccgp gov contract register ct-a --app app-a --address 0x5fbd... --from gov-org-1",
		Args:    exactArgs("CONTRACT_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgRegisterContract{Id: args[0], App: app, Address: address})
		},
	}
	reg.Flags().StringVar(&app, "app", "", "the app the contract belongs to")
	reg.Flags().StringVar(&address, "address", "", "the contract's address on its subchain")
	return []*cobra.Command{reg}
}

func pipeTxs(f *govFlags) []*cobra.Command {
	var srcContract, dstOrg, dstSubchain, mode string
	var maxPayload, rate uint32
	apply := &cobra.Command{
		Use:   "apply PIPE_ID",
		Short: "Apply for a pipe from your contract to another org's subchain",
		Example: "  ccgp gov pipe apply p1 --source-contract ct-a --dest-org org-2 --dest-subchain chain-b \\\n" +
			"      --mode strict --max-payload 65536 --from gov-org-1",
		Args: exactArgs("PIPE_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			m := &govchain.MsgApplyPipe{Id: args[0], SourceContract: srcContract, DestinationOrg: dstOrg, DestinationSubchain: dstSubchain,
				Limits: &govchain.PipeLimits{MaxPayload: maxPayload, RatePerSec: rate}}
			switch mode {
			case "optimistic":
				m.Mode = govchain.ConsistencyMode_MODE_OPTIMISTIC
			case "strict":
				m.Mode = govchain.ConsistencyMode_MODE_STRICT
			default:
				return usagef("--mode must be strict or optimistic")
			}
			return f.submit(c, m)
		},
	}
	apply.Flags().StringVar(&srcContract, "source-contract", "", "your contract that sends")
	apply.Flags().StringVar(&dstOrg, "dest-org", "", "destination org")
	apply.Flags().StringVar(&dstSubchain, "dest-subchain", "", "destination subchain")
	apply.Flags().StringVar(&mode, "mode", "optimistic", "consistency: strict (deliver after the anchor commits) or optimistic")
	apply.Flags().Uint32Var(&maxPayload, "max-payload", 0, "largest payload in bytes (0: 64 KiB)")
	apply.Flags().Uint32Var(&rate, "rate", 0, "packets per second (0: unlimited)")

	var dstContract string
	auth := &cobra.Command{
		Use:     "authorize PIPE_ID",
		Short:   "Authorize a pipe to your subchain (destination org)",
		Example: "  ccgp gov pipe authorize p1 --dest-contract ct-b --from gov-org-2",
		Args:    exactArgs("PIPE_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgAuthorizePipe{Id: args[0], DestinationContract: dstContract})
		},
	}
	auth.Flags().StringVar(&dstContract, "dest-contract", "", "your contract that receives")

	var reason string
	suspend := &cobra.Command{
		Use:   "suspend PIPE_ID",
		Short: "Suspend an active pipe (either end, or a genesis governor)",
		Args:  exactArgs("PIPE_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgSuspendPipe{Id: args[0], Reason: reason})
		},
	}
	suspend.Flags().StringVar(&reason, "reason", "", "why (recorded on chain)")
	resume := &cobra.Command{
		Use:   "resume PIPE_ID",
		Short: "Resume a suspended pipe",
		Args:  exactArgs("PIPE_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgResumePipe{Id: args[0]})
		},
	}
	modeCmd := &cobra.Command{
		Use:     "mode PIPE_ID strict|optimistic",
		Short:   "Propose a new consistency mode for a pipe (the genesis orgs vote)",
		Example: "  ccgp gov pipe mode p1 strict --from gov-org-1",
		Args:    exactArgs("PIPE_ID", "strict|optimistic"),
		RunE: func(c *cobra.Command, args []string) error {
			m := &govchain.MsgProposePipeMode{Pipe: args[0]}
			switch args[1] {
			case "strict":
				m.Mode = govchain.ConsistencyMode_MODE_STRICT
			case "optimistic":
				m.Mode = govchain.ConsistencyMode_MODE_OPTIMISTIC
			default:
				return usagef("mode must be strict or optimistic, not %q", args[1])
			}
			return f.submit(c, m)
		},
	}
	return []*cobra.Command{apply, auth, suspend, resume, modeCmd}
}
