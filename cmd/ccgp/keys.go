package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ccgpmesh/ccgp/crypto"
)

const insecureWarning = "WARNING: using unencrypted development keys (--insecure-dev-keys): never use them for anything of value"

// keystore opens HOME/keys. With --insecure-dev-keys it warns on stderr
// every time; otherwise it needs a passphrase only when asked to decrypt or
// create (needPass).
func (g *globals) keystore(needPass bool) (*crypto.Keystore, error) {
	dir := filepath.Join(g.home, "keys")
	if g.insecureKeys {
		fmt.Fprintln(os.Stderr, insecureWarning)
		return crypto.OpenKeystore(dir, nil, true)
	}
	if !needPass {
		// Listing and showing public keys needs no secret.
		return crypto.OpenKeystore(dir, []byte("-"), false)
	}
	pass, err := g.passphrase()
	if err != nil {
		return nil, err
	}
	return crypto.OpenKeystore(dir, pass, false)
}

func (g *globals) passphrase() ([]byte, error) {
	if g.passFile != "" {
		b, err := os.ReadFile(g.passFile)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, errors.New("passphrase file is empty")
		}
		return []byte(p), nil
	}
	if p := os.Getenv("CCGP_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, errors.New("the keystore is encrypted: give a passphrase with --passphrase-file or CCGP_PASSPHRASE, or use --insecure-dev-keys for development")
	}
	fmt.Fprint(os.Stderr, "keystore passphrase: ")
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if len(b) == 0 {
		return nil, errors.New("empty passphrase")
	}
	return b, nil
}

// signer loads the key called name for signing.
func (g *globals) signer(name string) (crypto.Signer, error) {
	if name == "" {
		return nil, usagef("--from KEY is required: the name of the key that signs (see 'ccgp keys list')")
	}
	ks, err := g.keystore(true)
	if err != nil {
		return nil, err
	}
	s, _, err := ks.Signer(name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func newKeysCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the signing keys in HOME/keys",
		Long: `Manage the Ed25519 signing keys in HOME/keys.

Keys are encrypted at rest with AES-256-GCM under a key derived from your
passphrase (Argon2id). The passphrase comes from --passphrase-file, the
CCGP_PASSPHRASE environment variable, or a prompt. --insecure-dev-keys
stores keys unencrypted for development and says so on every use.`,
	}
	cmd.PersistentFlags().StringVarP(&out, "output", "o", "table", "output format: table or json")

	add := &cobra.Command{
		Use:     "add NAME",
		Short:   "Generate a new key",
		Example: "  ccgp keys add alice --passphrase-file ./pass\n  ccgp keys add dev1 --insecure-dev-keys",
		Args:    exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := crypto.ValidateKeyName(args[0]); err != nil {
				return usageError{err}
			}
			ks, err := g.keystore(true)
			if err != nil {
				return err
			}
			ki, err := ks.Add(args[0])
			if err != nil {
				return err
			}
			return printKeys(out, []crypto.KeyInfo{ki})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys (public parts only)",
		Args:  exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			ks, err := g.keystore(false)
			if err != nil {
				return err
			}
			kis, err := ks.List()
			if err != nil {
				return err
			}
			if len(kis) == 0 && out == "table" {
				fmt.Fprintf(os.Stderr, "no keys in %s (add one with 'ccgp keys add NAME')\n", ks.Dir())
				return nil
			}
			return printKeys(out, kis)
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a key's address and public key",
		Args:  exactArgs("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			ks, err := g.keystore(false)
			if err != nil {
				return err
			}
			ki, err := ks.Show(args[0])
			if err != nil {
				return err
			}
			return printKeys(out, []crypto.KeyInfo{ki})
		},
	}
	cmd.AddCommand(add, list, show)
	return cmd
}

func printKeys(format string, kis []crypto.KeyInfo) error {
	type row struct {
		Name      string `json:"name"`
		Suite     string `json:"suite"`
		Address   string `json:"address"`
		PublicKey string `json:"public_key"`
		Insecure  bool   `json:"insecure"`
	}
	rows := make([]row, len(kis))
	for i, k := range kis {
		rows[i] = row{k.Name, string(k.Suite), k.Address.String(), hex.EncodeToString(k.PublicKey), k.Insecure}
	}
	switch format {
	case "json":
		return writeJSON(rows)
	case "table":
		w := newTable("NAME", "SUITE", "ADDRESS", "PUBLIC KEY", "ENCRYPTED")
		for _, r := range rows {
			enc := "yes"
			if r.Insecure {
				enc = "NO (dev key)"
			}
			w.row(r.Name, r.Suite, r.Address, r.PublicKey, enc)
		}
		return w.flush()
	}
	return usagef("unknown output format %q: use table or json", format)
}
