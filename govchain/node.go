package govchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	nm "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/rpc/client/local"
	"github.com/spf13/viper"
)

// LocalNode is a CometBFT node running the governance application in-process.
type LocalNode struct {
	home string
	cmt  *nm.Node
	app  *Application
	dbs  *nodeDBs  // the node's stores, closed by Stop
	rpc  *rpcFront // the RPC address, closed with its connections by Stop; nil without a TCP RPC address
	log  *slog.Logger
}

// LoadConfig reads home/config/config.toml the way the cometbft binary
// does, with the root set to home.
func LoadConfig(home string) (*cmtcfg.Config, error) {
	path := filepath.Join(home, "config", "config.toml")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("govchain: no node config at %s (make one with `ccgp testnet`): %w", path, err)
	}
	v := viper.New()
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("govchain: read %s: %w", path, err)
	}
	c := cmtcfg.DefaultConfig()
	if err := v.Unmarshal(c); err != nil {
		return nil, fmt.Errorf("govchain: parse %s: %w", path, err)
	}
	c.SetRoot(home)
	if err := c.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("govchain: %s: %w", path, err)
	}
	return c, nil
}

// StartNode starts the node whose home is home (made by GenerateTestnet or
// `ccgp testnet`) and returns once it runs. Stop it with Stop.
func StartNode(ctx context.Context, home string, log *slog.Logger) (*LocalNode, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := LoadConfig(home)
	if err != nil {
		return nil, err
	}
	app, err := NewApp(filepath.Join(home, "data"), log.With("module", "govchain"))
	if err != nil {
		return nil, err
	}
	nodeKey, err := p2p.LoadNodeKey(c.NodeKeyFile())
	if err != nil {
		app.Close()
		return nil, fmt.Errorf("govchain: node key: %w", err)
	}
	pv := privval.LoadFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile())
	var front *rpcFront
	rpcAddr := c.RPC.ListenAddress
	if strings.HasPrefix(rpcAddr, "tcp://") {
		// CometBFT listens behind the front, which Stop closes with
		// every connection (see rpcFront).
		if front, c.RPC.ListenAddress, err = newRPCFront(rpcAddr); err != nil {
			app.Close()
			return nil, err
		}
	}
	closeFront := func() error {
		if front == nil {
			return nil
		}
		return front.close()
	}
	dbs := &nodeDBs{}
	cmt, err := nm.NewNode(ctx, c, pv, nodeKey, proxy.NewLocalClientCreator(app),
		nm.DefaultGenesisDocProviderFunc(c), dbs.provide,
		nm.DefaultMetricsProvider(c.Instrumentation), cometLogger{log.With("module", "cometbft")})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("govchain: create node in %s: %w", home, err), dbs.closeAll(), app.Close(), closeFront())
	}
	if err := cmt.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("govchain: start node in %s: %w", home, err), dbs.closeAll(), app.Close(), closeFront())
	}
	if front != nil {
		front.serve()
	}
	log.Info("governance node started", "home", home, "id", nodeKey.ID(), "p2p", c.P2P.ListenAddress, "rpc", rpcAddr)
	return &LocalNode{home: home, cmt: cmt, app: app, dbs: dbs, rpc: front, log: log}, nil
}

// Client returns a client that talks to this node in-process, anchored at
// the node's genesis (TrustRoot); opts may override the root.
func (n *LocalNode) Client(opts ...ClientOption) (*Client, error) {
	root, err := n.TrustRoot()
	if err != nil {
		return nil, err
	}
	opts = append([]ClientOption{WithTrustRoot(root), WithLogger(n.log)}, opts...)
	return NewClient(context.Background(), local.New(n.cmt), opts...)
}

// TrustRoot is the root in the node's genesis file: chain id and genesis
// validators.
func (n *LocalNode) TrustRoot() (TrustRoot, error) { return TrustRootFromGenesis(n.GenesisFile()) }

// GenesisFile is the path of the node's genesis.json.
func (n *LocalNode) GenesisFile() string { return n.cmt.Config().GenesisFile() }

// RPC returns an in-process RPC client of this node, for callers that make
// their own Client.
func (n *LocalNode) RPC() *local.Local { return local.New(n.cmt) }

// ID is the node's P2P id.
func (n *LocalNode) ID() string { return string(n.cmt.NodeInfo().ID()) }

// Height is the last committed block height.
func (n *LocalNode) Height() int64 { return n.cmt.BlockStore().Height() }

// IsValidator reports whether this node's consensus key is in the current
// validator set.
func (n *LocalNode) IsValidator(ctx context.Context) (bool, error) {
	pub, err := n.cmt.PrivValidator().GetPubKey()
	if err != nil {
		return false, fmt.Errorf("govchain: consensus key: %w", err)
	}
	perPage := 100
	res, err := local.New(n.cmt).Validators(ctx, nil, nil, &perPage)
	if err != nil {
		return false, fmt.Errorf("govchain: validators: %w", err)
	}
	for _, v := range res.Validators {
		if v.Address.String() == pub.Address().String() {
			return true, nil
		}
	}
	return false, nil
}

// Stop stops the node and closes its state. It is safe to call twice.
func (n *LocalNode) Stop() error {
	var err error
	if n.cmt.IsRunning() {
		err = n.cmt.Stop()
		n.cmt.Wait()
	}
	// Its RPC connections end with it, as when a node process exits.
	if n.rpc != nil {
		err = errors.Join(err, n.rpc.close())
		n.rpc = nil
	}
	// After the node stopped: the stores CometBFT did not close (its tx
	// index), so that the home can be started again in this process.
	if n.dbs != nil {
		err = errors.Join(err, n.dbs.closeAll())
	}
	if n.app != nil {
		err = errors.Join(err, n.app.Close())
		n.app = nil
	}
	return err
}

// StopLeftovers names the goroutines (their functions, for a leak
// check such as goleak.IgnoreAnyFunction) that a LocalNode leaves
// running after Stop: pebble's and CometBFT's background loops that
// v1.0.1 starts and never joins. They idle, and end with the process.
func StopLeftovers() []string {
	return []string{
		"github.com/cockroachdb/pebble.(*cleanupManager).mainLoop",
		"github.com/cockroachdb/pebble.(*tableCacheShard).releaseLoop.func1",
		"github.com/cockroachdb/pebble/vfs.(*diskHealthCheckingFS).startTickerLocked.func1",
		"github.com/cockroachdb/pebble/vfs.(*diskHealthCheckingFile).startTicker.func1",
		"github.com/cockroachdb/pebble/record.(*LogWriter).flushLoop",
		"github.com/cometbft/cometbft/internal/autofile.(*AutoFile).closeFileRoutine",
		"github.com/cometbft/cometbft/internal/autofile.OpenAutoFile.func1",
		"github.com/cometbft/cometbft/proxy.(*multiAppConn).killTMOnClientError",
		"github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain",
		"github.com/cometbft/cometbft/state.(*Pruner).pruneBlocks",
	}
}

// cometLogger sends CometBFT's logs to slog; its Info level is chatty, so
// it goes to slog's Debug.
type cometLogger struct{ l *slog.Logger }

func (c cometLogger) Debug(msg string, kv ...any) { c.l.Debug(msg, kv...) }
func (c cometLogger) Info(msg string, kv ...any)  { c.l.Debug(msg, kv...) }
func (c cometLogger) Error(msg string, kv ...any) {
	// Peers coming and going are normal on a consortium network.
	if strings.Contains(msg, "Stopping peer for error") || strings.Contains(msg, "dial") {
		c.l.Debug(msg, kv...)
		return
	}
	c.l.Error(msg, kv...)
}
func (c cometLogger) With(kv ...any) cmtlog.Logger { return cometLogger{c.l.With(kv...)} }

// WaitForHeight blocks until the node has committed height h.
func (n *LocalNode) WaitForHeight(ctx context.Context, h int64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.Height() < h {
		select {
		case <-ctx.Done():
			return fmt.Errorf("govchain: waiting for height %d (at %d): %w", h, n.Height(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
