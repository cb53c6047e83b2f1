package govchain

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"

	"github.com/ccgpmesh/ccgp/crypto"
)

// TestnetOptions describes a local network: N validators (one genesis org
// each) and M audit nodes, all on 127.0.0.1.
type TestnetOptions struct {
	Dir        string
	ChainID    string
	Validators int
	AuditNodes int
	// GenesisOrgs is how many genesis orgs to create (zero: one per
	// validator). Validator i belongs to org i mod GenesisOrgs, so an org
	// may run several validators.
	GenesisOrgs int
	// BasePort is node i's P2P port base+10*i and RPC port base+10*i+1.
	// Zero picks free ports (for tests).
	BasePort int
	// BlockInterval is CometBFT's timeout_commit. Zero means 200ms.
	BlockInterval time.Duration
	// Params are the governance parameters (nil: DefaultParams).
	Params *Params
	// Keystore opens the keystore that receives each genesis org's governor
	// key "gov-<org>". Nil means deterministic development keys that are not
	// written anywhere (crypto.DevSigner("gov-<org>")).
	Keystore *crypto.Keystore
}

// TestnetNode is one node of a generated testnet.
// CheckTestnetDir refuses an output directory that holds anything but a
// keystore ("keys"), so that a testnet never overwrites another.
func CheckTestnetDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil // absent: it will be made
	}
	for _, e := range ents {
		if e.Name() != "keys" {
			return fmt.Errorf("testnet: %s is not empty; choose a new directory", dir)
		}
	}
	return nil
}

type TestnetNode struct {
	Name      string `json:"name"`
	Home      string `json:"home"`
	ID        string `json:"id"`
	Validator bool   `json:"validator"`
	Org       string `json:"org,omitempty"`
	P2P       string `json:"p2p"`
	RPC       string `json:"rpc"`
}

// Testnet is what GenerateTestnet made.
type Testnet struct {
	ChainID string         `json:"chain_id"`
	Orgs    []string       `json:"orgs"`
	Nodes   []*TestnetNode `json:"nodes"`
}

// OrgName is the id of the i-th genesis org of a testnet.
func OrgName(i int) string { return fmt.Sprintf("org-%d", i+1) }

// GenerateTestnet writes every node's home (config, node key, consensus key)
// and one shared genesis into opts.Dir, plus testnet.json describing it.
func GenerateTestnet(opts TestnetOptions) (*Testnet, error) {
	if opts.Validators < 1 || opts.Validators > 64 {
		return nil, fmt.Errorf("testnet: --validators must be 1-64, got %d", opts.Validators)
	}
	if opts.AuditNodes < 0 || opts.AuditNodes > 64 {
		return nil, fmt.Errorf("testnet: --audit-nodes must be 0-64, got %d", opts.AuditNodes)
	}
	if opts.GenesisOrgs == 0 {
		opts.GenesisOrgs = opts.Validators
	}
	if opts.GenesisOrgs < 1 || opts.GenesisOrgs > 64 {
		return nil, fmt.Errorf("testnet: genesis orgs must be 1-64, got %d", opts.GenesisOrgs)
	}
	if opts.Dir == "" {
		return nil, errors.New("testnet: an output directory is required")
	}
	if opts.ChainID == "" {
		opts.ChainID = "ccgp-testnet"
	}
	if opts.BlockInterval == 0 {
		opts.BlockInterval = 200 * time.Millisecond
	}
	if err := CheckTestnetDir(opts.Dir); err != nil {
		return nil, err
	}
	total := opts.Validators + opts.AuditNodes
	ports, err := pickPorts(opts.BasePort, total)
	if err != nil {
		return nil, err
	}
	tn := &Testnet{ChainID: opts.ChainID}
	gs := &GenesisState{Params: opts.Params}
	if gs.Params == nil {
		gs.Params = DefaultParams()
	}
	var genVals []types.GenesisValidator
	cfgs := make([]*cmtcfg.Config, total)
	for i := 0; i < total; i++ {
		n := &TestnetNode{Validator: i < opts.Validators}
		if n.Validator {
			n.Name = fmt.Sprintf("validator%d", i)
			n.Org = OrgName(i % opts.GenesisOrgs)
		} else {
			n.Name = fmt.Sprintf("audit%d", i-opts.Validators)
		}
		n.Home = filepath.Join(opts.Dir, n.Name)
		n.P2P = fmt.Sprintf("127.0.0.1:%d", ports[i][0])
		n.RPC = fmt.Sprintf("127.0.0.1:%d", ports[i][1])
		c := cmtcfg.DefaultConfig()
		c.SetRoot(n.Home)
		cmtcfg.EnsureRoot(n.Home)
		c.Moniker = n.Name
		c.P2P.ListenAddress = "tcp://" + n.P2P
		c.RPC.ListenAddress = "tcp://" + n.RPC
		c.P2P.AllowDuplicateIP = true
		c.P2P.AddrBookStrict = false
		c.P2P.PexReactor = false
		c.Consensus.TimeoutCommit = opts.BlockInterval
		c.Consensus.TimeoutPropose = 1 * time.Second
		c.Mempool.Size = 50000
		c.Mempool.CacheSize = 100000
		c.RPC.MaxSubscriptionClients = 1000
		c.RPC.MaxSubscriptionsPerClient = 1000
		c.Instrumentation.Prometheus = false
		nodeKey, err := p2p.LoadOrGenNodeKey(c.NodeKeyFile())
		if err != nil {
			return nil, fmt.Errorf("testnet: node key: %w", err)
		}
		n.ID = string(nodeKey.ID())
		pv, err := privval.GenFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile(), nil)
		if err != nil {
			return nil, fmt.Errorf("testnet: consensus key: %w", err)
		}
		pv.Save()
		if n.Validator {
			pub, err := pv.GetPubKey()
			if err != nil {
				return nil, err
			}
			genVals = append(genVals, types.GenesisValidator{Address: pub.Address(), PubKey: pub, Power: 10, Name: n.Name})
			gs.Nodes = append(gs.Nodes, &GenesisNode{Id: n.ID, Org: n.Org, ConsensusPubKey: pub.Bytes(), Power: 10})
		}
		tn.Nodes = append(tn.Nodes, n)
		cfgs[i] = c
	}
	for i := 0; i < opts.GenesisOrgs; i++ {
		org := OrgName(i)
		gov, err := governorKey(opts.Keystore, org)
		if err != nil {
			return nil, err
		}
		tn.Orgs = append(tn.Orgs, org)
		gs.Orgs = append(gs.Orgs, &GenesisOrg{Id: org, Name: fmt.Sprintf("Genesis org %d", i+1)})
		gs.Accounts = append(gs.Accounts, &GenesisAccount{Org: org, Role: Role_ROLE_GOVERNOR, Suite: string(gov.Suite),
			PublicKey: gov.PublicKey, Name: "gov-" + org})
	}
	appState, err := EncodeGenesisState(gs)
	if err != nil {
		return nil, err
	}
	gen := &types.GenesisDoc{ChainID: opts.ChainID, GenesisTime: cmttime.Now(), InitialHeight: 1,
		ConsensusParams: types.DefaultConsensusParams(), Validators: genVals, AppState: appState}
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, fmt.Errorf("testnet: genesis: %w", err)
	}
	for i, c := range cfgs {
		var peers []string
		for j, other := range tn.Nodes {
			if j != i && other.Validator { // everyone peers with the validators
				peers = append(peers, other.ID+"@"+other.P2P)
			}
		}
		c.P2P.PersistentPeers = strings.Join(peers, ",")
		if err := gen.SaveAs(c.GenesisFile()); err != nil {
			return nil, fmt.Errorf("testnet: write genesis: %w", err)
		}
		cmtcfg.WriteConfigFile(filepath.Join(c.RootDir, "config", "config.toml"), c)
	}
	b, _ := json.MarshalIndent(tn, "", "  ")
	if err := os.WriteFile(filepath.Join(opts.Dir, "testnet.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	return tn, nil
}

func governorKey(ks *crypto.Keystore, org string) (crypto.KeyInfo, error) {
	name := "gov-" + org
	if ks == nil {
		s := crypto.DevSigner(name)
		return crypto.KeyInfo{Name: name, Suite: s.Suite(), Address: crypto.SignerAddress(s), PublicKey: s.PublicKey(), Insecure: true}, nil
	}
	if ki, err := ks.Show(name); err == nil {
		return ki, nil
	}
	return ks.Add(name)
}

// pickPorts returns a P2P and an RPC port per node: fixed from base, or
// free ports found by binding 127.0.0.1:0 (released before use, so a rare
// clash is possible; tests retry on start-up failure).
func pickPorts(base, n int) ([][2]int, error) {
	out := make([][2]int, n)
	if base > 0 {
		if base+10*n > 65535 {
			return nil, fmt.Errorf("testnet: base port %d leaves no room for %d nodes", base, n)
		}
		for i := range out {
			out[i] = [2]int{base + 10*i, base + 10*i + 1}
		}
		return out, nil
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range out {
		for j := 0; j < 2; j++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("testnet: find a free port: %w", err)
			}
			ls = append(ls, l)
			out[i][j] = l.Addr().(*net.TCPAddr).Port
		}
	}
	return out, nil
}
