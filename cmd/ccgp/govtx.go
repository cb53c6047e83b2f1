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

	var reason string
	expel := &cobra.Command{
		Use:   "expel ORG_ID",
		Short: "Propose to expel an org (governors of genesis orgs; the genesis orgs vote)",
		Long: `Propose to expel an org. The genesis orgs vote with 'ccgp gov vote'. When the
proposal passes the org is expelled: every account of it is revoked, every
service of it revoked, and every pipe with an end in it suspended.

Expelling a genesis org: it does not vote on its own expulsion (the
proposal's electorate is the other active genesis orgs); once expelled it
leaves the electorate, and proposals still voting are recounted without it.
The last genesis org cannot be expelled.`,
		Example: "  ccgp gov org expel org-x --reason \"double-spent packets\" --from gov-org-1\n" +
			"  ccgp gov vote 7 yes --from gov-org-2",
		Args: exactArgs("ORG_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return f.submit(c, &govchain.MsgProposeExpelOrg{Org: args[0], Reason: reason})
		},
	}
	expel.Flags().StringVar(&reason, "reason", "", "why (recorded in the proposal)")
	return []*cobra.Command{apply, expel}
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

	var reason string
	revoke := &cobra.Command{
		Use:   "revoke ACCOUNT",
		Short: "Revoke an account: at once for your own org's, by vote for another org's",
		Long: `Revoke an account: its address, or the name of the key in HOME/keys that
it was created with (after a rotation, give the address).

Sent by a governor or operator of the account's own org, it takes effect in
the block that commits it. Sent by a governor of a genesis org for another
org's account, it opens a proposal that the genesis orgs vote on.

A revoked account sends no tx. Every pipe whose source or destination names
it is suspended ("account revoked"), and every relay service it signs for is
revoked. Revocation is final: admit a new account instead.`,
		Example: "  ccgp gov account revoke relay-x --reason \"key leaked\" --from x-admin\n" +
			"  ccgp gov account revoke 3f1c0d...9a --reason \"forged receipts\" --from gov-org-1",
		Args: exactArgs("ACCOUNT"),
		RunE: func(c *cobra.Command, args []string) error {
			acct, err := f.address(args[0])
			if err != nil {
				return err
			}
			return f.submit(c, &govchain.MsgRevokeAccount{Account: acct, Reason: reason})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded on the account)")

	var newKey string
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Move your account to a new key (signed by the current key and the new one)",
		Long: `Move the account that --from signs for to the key --new-key (both in
HOME/keys). The tx is signed by the current key; the new key signs a
statement naming the chain, the account, the new key and the tx's nonce, so
nobody can rotate to a key they do not hold.

From the block that commits it, the account keeps its address and signs
with the new key only: txs signed by the old key are refused, and every
pipe endpoint naming the account carries the new key. Packets the old key
signed that are not yet routed are refused by the relays: drain them
before rotating, or sign them again. Afterwards use --from with the new key;
the CLI finds the account it was rotated onto.`,
		Example: "  ccgp keys add relay-x-2 && ccgp gov account rotate-key --new-key relay-x-2 --from relay-x",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if newKey == "" {
				return usagef("--new-key is required: the name of the new key in HOME/keys")
			}
			if newKey == f.from {
				return usagef("--new-key must differ from --from")
			}
			ctx := c.Context()
			s, err := f.signer(f.from)
			if err != nil {
				return err
			}
			next, err := f.signer(newKey)
			if err != nil {
				return err
			}
			cl, err := f.client(ctx)
			if err != nil {
				return err
			}
			addr, acct, err := cl.AccountByKey(ctx, crypto.SignerAddress(s))
			if err != nil {
				return err
			}
			nonce := acct.Nonce + 1
			m, err := govchain.NewRotateKey(cl.ChainID(), addr, nonce, next)
			if err != nil {
				return err
			}
			res, err := submitAs(ctx, cl, s, addr, nonce, m)
			return f.printResult(res, err)
		},
	}
	rotate.Flags().StringVar(&newKey, "new-key", "", "the new key's name in HOME/keys")
	return []*cobra.Command{propose, revoke, rotate}
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

// fingerprint parses --tls-fingerprint: 64 hex digits, colons allowed.
func fingerprint(s string) ([]byte, error) {
	if s == "" {
		return nil, usagef("--tls-fingerprint is required: the SHA-256 of the relay's TLS certificate ('ccgp relay init' prints it)")
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != 32 {
		return nil, usagef("--tls-fingerprint must be 64 hex digits (a SHA-256), not %q", s)
	}
	return b, nil
}

func serviceTxs(f *govFlags) []*cobra.Command {
	var address, fp, account string
	reg := &cobra.Command{
		Use:   "register RELAY_ID",
		Short: "Register your org's relay service",
		Long: `Register your org's relay: its QUIC address, the SHA-256 fingerprint of its
TLS certificate (required: peers accept only the certificate the chain
names) and the cross-chain account that signs its batches.`,
		Example: "  ccgp gov service register relay-a --address 127.0.0.1:7001 --tls-fingerprint 9f86d0...0a08 --account relay-a-key --from gov-org-1",
		Args:    exactArgs("RELAY_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			fpb, err := fingerprint(fp)
			if err != nil {
				return err
			}
			acct, err := f.address(account)
			if err != nil {
				return err
			}
			return f.submit(c, &govchain.MsgRegisterService{RelayId: args[0], Address: address, TlsCertSha256: fpb, Account: acct})
		},
	}
	reg.Flags().StringVar(&address, "address", "", "the relay's QUIC host:port")
	reg.Flags().StringVar(&fp, "tls-fingerprint", "", "SHA-256 of the relay's TLS certificate, hex (required)")
	reg.Flags().StringVar(&account, "account", "", "the relay's cross-chain account: address or key name")

	var upAddress, upFP string
	update := &cobra.Command{
		Use:   "update RELAY_ID",
		Short: "Change your org's relay address and TLS certificate fingerprint",
		Long: `Change a relay service's QUIC address and TLS certificate fingerprint, both
required, e.g. after moving the relay or renewing its certificate. Sent by a
governor or operator of the service's org; peers dial the new address and
accept only the new certificate from the block that commits it. A revoked
service cannot be updated.`,
		Example: "  ccgp gov service update relay-a --address 10.0.0.5:7001 --tls-fingerprint 9f86d0...0a08 --from gov-org-1",
		Args:    exactArgs("RELAY_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if upAddress == "" {
				return usagef("--address is required: the relay's QUIC host:port")
			}
			fpb, err := fingerprint(upFP)
			if err != nil {
				return err
			}
			return f.submit(c, &govchain.MsgUpdateService{RelayId: args[0], Address: upAddress, TlsCertSha256: fpb})
		},
	}
	update.Flags().StringVar(&upAddress, "address", "", "the relay's QUIC host:port")
	update.Flags().StringVar(&upFP, "tls-fingerprint", "", "SHA-256 of the relay's TLS certificate, hex")
	return []*cobra.Command{reg, update}
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
