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

// errStoreClosed answers a write that arrives after the store closed.
var errStoreClosed = errors.New("govchain: store closed")

// closeSafeDB guards a store against use after Close. Reads answer
// "absent"; writes answer errStoreClosed instead of reaching pebble, which
// panics on a closed DB. The tx indexer's goroutine is the reason for the
// writes: v1.0.1's IndexerService.Stop does not wait for it, so a block
// that was being indexed while the node stopped is committed to the tx
// index after the node returned from Stop, and closeAll has closed it
// (seen as "panic: pebble: closed" in TxIndex.AddBatch in CI). mu makes
// Close wait for a write in flight and every later write see closed.
type closeSafeDB struct {
	dbm.DB
	id     string
	mu     sync.RWMutex
	closed atomic.Bool
}

func (d *closeSafeDB) Get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return nil, nil
	}
	return d.DB.Get(key)
}

func (d *closeSafeDB) Has(key []byte) (bool, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return false, nil
	}
	return d.DB.Has(key)
}

// write runs f unless the store is closed, holding Close off meanwhile.
func (d *closeSafeDB) write(f func() error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return fmt.Errorf("%w: %s", errStoreClosed, d.id)
	}
	return f()
}

func (d *closeSafeDB) Set(k, v []byte) error {
	return d.write(func() error { return d.DB.Set(k, v) })
}

func (d *closeSafeDB) SetSync(k, v []byte) error {
	return d.write(func() error { return d.DB.SetSync(k, v) })
}

func (d *closeSafeDB) Delete(k []byte) error {
	return d.write(func() error { return d.DB.Delete(k) })
}

func (d *closeSafeDB) DeleteSync(k []byte) error {
	return d.write(func() error { return d.DB.DeleteSync(k) })
}

func (d *closeSafeDB) Iterator(start, end []byte) (dbm.Iterator, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return nil, fmt.Errorf("%w: %s", errStoreClosed, d.id)
	}
	return d.DB.Iterator(start, end)
}

func (d *closeSafeDB) ReverseIterator(start, end []byte) (dbm.Iterator, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return nil, fmt.Errorf("%w: %s", errStoreClosed, d.id)
	}
	return d.DB.ReverseIterator(start, end)
}

// NewBatch wraps the store's batch so that its commit goes through write.
func (d *closeSafeDB) NewBatch() dbm.Batch {
	return &closeSafeBatch{Batch: d.DB.NewBatch(), db: d}
}

type closeSafeBatch struct {
	dbm.Batch
	db *closeSafeDB
}

func (b *closeSafeBatch) Write() error {
	return b.db.write(b.Batch.Write)
}

func (b *closeSafeBatch) WriteSync() error {
	return b.db.write(b.Batch.WriteSync)
}

// Close closes the store once; later calls (CometBFT's, then closeAll's)
// do nothing. It waits for a read or write in flight.
func (d *closeSafeDB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Swap(true) {
		return nil
	}
	return d.DB.Close()
}
