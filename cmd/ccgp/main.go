// Command ccgp is the one binary of the cross-chain collaborative
// governance platform: keys, the governance chain's nodes and txs, the
// relays, the demo and the benchmark. It parses flags and wires packages;
// the logic lives in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks bad command-line input (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// globals are the flags every command shares.
type globals struct {
	home         string
	logLevel     string
	insecureKeys bool
	passFile     string
}

func defaultHome() string {
	if h := os.Getenv("CCGP_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".ccgp")
	}
	return ".ccgp"
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "ccgp",
		Short: "Cross-chain collaborative governance platform",
		Long: `ccgp connects industry blockchains under the governance of a chain.

The governance chain (CometBFT) holds the consortium: member orgs admitted by
vote, accounts and roles, relay services, subchains, apps, contracts and the
pipes that authorize cross-chain traffic. Relays carry that traffic.

Start here:
  ccgp demo                          the whole thing in one process
  ccgp testnet --validators 4 --out ./net --insecure-dev-keys
  ccgp node start --home ./net/validator0
  ccgp gov org list --node 127.0.0.1:26657`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.home, "home", defaultHome(), "ccgp home directory: keystore under HOME/keys (env CCGP_HOME)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().BoolVar(&g.insecureKeys, "insecure-dev-keys", false, "keep keys unencrypted on disk (development only; every use prints a warning)")
	root.PersistentFlags().StringVar(&g.passFile, "passphrase-file", "", "read the keystore passphrase from this file (else env CCGP_PASSPHRASE, else a prompt)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newKeysCmd(g), newTestnetCmd(g), newNodeCmd(g), newGovCmd(g), newRelayCmd(g), newKafkaCmd(g), newTxCmd(g), newManualCmd(g), newDemoCmd(g), newBenchCmd(g), newAnalyticsCmd(g))
	return root
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// exactArgs is cobra.ExactArgs with a message that names what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %d argument(s): %v, got %d\nSee '%s --help'.", c.CommandPath(), len(names), names, len(args), c.CommandPath())
		}
		return nil
	}
}
