package govchain

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
)

// nodeDBs opens a node's stores (its DBProvider) and remembers them, so
// that LocalNode.Stop can close what CometBFT leaves open: v1.0.1's
// Node.OnStop closes the block, state and evidence stores but never the
// tx index (tx_index.db), whose pebble lock then stays held and a node
// started again on the same home in this process fails with "lock held by
// current process" (StopGovNode, StartGovNode).
//
// Each store is wrapped so that a read after Close answers "absent"
// instead of an error. CometBFT v1.0.1's consensus reactor has peer
// routines (queryMaj23Routine) that can wake after the node stopped and
// closed its block store; the store panics on the read error, which would
// take the whole process down while it shuts a node down (seen in tests
// that stop one of several in-process validators).
type nodeDBs struct {
	mu  sync.Mutex
	dbs []*closeSafeDB
}

// provide is the node's cmtcfg.DBProvider.
func (n *nodeDBs) provide(ctx *cmtcfg.DBContext) (dbm.DB, error) {
	db, err := cmtcfg.DefaultDBProvider(ctx)
	if err != nil {
		return nil, err
	}
	d := &closeSafeDB{DB: db, id: ctx.ID}
	n.mu.Lock()
	n.dbs = append(n.dbs, d)
	n.mu.Unlock()
	return d, nil
}

// closeAll closes every store not closed yet; call it once the node has
// stopped (nothing writes to them any more).
func (n *nodeDBs) closeAll() error {
	n.mu.Lock()
	dbs := n.dbs
	n.dbs = nil
	n.mu.Unlock()
	var errs []error
	for _, d := range dbs {
		if err := d.Close(); err != nil {
			errs = append(errs, fmt.Errorf("govchain: close store %s: %w", d.id, err))
		}
	}
	return errors.Join(errs...)
}

type closeSafeDB struct {
	dbm.DB
	id     string
	closed atomic.Bool
}

func (d *closeSafeDB) Get(key []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, nil
	}
	v, err := d.DB.Get(key)
	if err != nil && d.closed.Load() {
		return nil, nil
	}
	return v, err
}

func (d *closeSafeDB) Has(key []byte) (bool, error) {
	if d.closed.Load() {
		return false, nil
	}
	v, err := d.DB.Has(key)
	if err != nil && d.closed.Load() {
		return false, nil
	}
	return v, err
}

// Close closes the store once; later calls (CometBFT's, then closeAll's)
// do nothing.
func (d *closeSafeDB) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	return d.DB.Close()
}
