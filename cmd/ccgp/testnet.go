package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

func newTestnetCmd(g *globals) *cobra.Command {
	var o govchain.TestnetOptions
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Generate a local governance network on 127.0.0.1",
		Long: `Generate the homes of a local governance network: N validators (each the
node of one genesis org), M audit nodes (non-voting full nodes), one genesis,
and a governor key "gov-org-I" per genesis org in OUT/keys.

Node I listens for P2P on BASE+10*I and for RPC on BASE+10*I+1.
Start each node with 'ccgp node start --home OUT/validatorI', then govern
with 'ccgp gov ... --home OUT --from gov-org-1 --node 127.0.0.1:PORT'.`,
		Example: "  ccgp testnet --validators 4 --audit-nodes 1 --out ./net --insecure-dev-keys",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if o.Dir == "" {
				return usagef("--out DIR is required")
			}
			if o.Validators < 1 {
				return usagef("--validators must be at least 1")
			}
			if err := govchain.CheckTestnetDir(o.Dir); err != nil {
				return err
			}
			// The governor keys go into OUT/keys so that --home OUT signs with them.
			gg := *g
			gg.home = o.Dir
			ks, err := gg.keystore(true)
			if err != nil {
				return err
			}
			o.Keystore = ks
			tn, err := govchain.GenerateTestnet(o)
			if err != nil {
				return err
			}
			ca, err := crypto.NewDevCA("ccgp development CA " + tn.ChainID)
			if err != nil {
				return err
			}
			if err := crypto.SaveCA(filepath.Join(o.Dir, "ca"), ca); err != nil {
				return err
			}
			fmt.Printf("testnet %s in %s\n", tn.ChainID, o.Dir)
			t := newTable("NODE", "ROLE", "ORG", "P2P", "RPC", "HOME")
			for _, n := range tn.Nodes {
				role := "audit"
				if n.Validator {
					role = "validator"
				}
				t.row(n.Name, role, n.Org, n.P2P, n.RPC, n.Home)
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Printf("\ngenesis orgs: %v (governor keys gov-<org> in %s)\n", tn.Orgs, filepath.Join(o.Dir, "keys"))
			fmt.Printf("development CA for relay mTLS: %s (ccgp relay init --ca)\n", filepath.Join(o.Dir, "ca"))
			fmt.Printf("start:  ccgp node start --home %s\n", tn.Nodes[0].Home)
			fmt.Printf("govern: ccgp gov org list --node %s\n", tn.Nodes[0].RPC)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Validators, "validators", 4, "validators, one genesis org each")
	f.IntVar(&o.AuditNodes, "audit-nodes", 0, "non-voting audit nodes")
	f.IntVar(&o.GenesisOrgs, "genesis-orgs", 0, "genesis orgs (default: one per validator)")
	f.StringVar(&o.Dir, "out", "", "output directory (must be new or empty)")
	f.StringVar(&o.ChainID, "chain-id", "ccgp-testnet", "chain id")
	f.IntVar(&o.BasePort, "base-port", 26656, "first port; node I uses BASE+10*I (P2P) and BASE+10*I+1 (RPC); 0 picks free ports")
	f.DurationVar(&o.BlockInterval, "block-interval", 200*time.Millisecond, "CometBFT timeout_commit")
	return cmd
}

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Run a governance chain node"}
	var home string
	start := &cobra.Command{
		Use:   "start",
		Short: "Start the node whose home is --home, until interrupted",
		Long: `Start a governance chain node (CometBFT with the govchain application)
from a home made by 'ccgp testnet'. It runs until SIGINT or SIGTERM.`,
		Example: "  ccgp node start --home ./net/validator0",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := os.Stat(home); err != nil {
				return usagef("node home %s: %v", home, err)
			}
			n, err := govchain.StartNode(c.Context(), home, g.logger())
			if err != nil {
				return err
			}
			<-c.Context().Done()
			fmt.Fprintln(os.Stderr, "stopping node")
			return n.Stop()
		},
	}
	// The node's home is its own --home, not the keystore's.
	start.Flags().StringVar(&home, "home", "", "node home directory (made by 'ccgp testnet')")
	_ = start.MarkFlagRequired("home")
	cmd.AddCommand(start)
	return cmd
}
