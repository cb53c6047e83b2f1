package govchain

import (
	"sync/atomic"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
)

// closeSafeDBProvider wraps CometBFT's default stores so that a read after
// Close answers "absent" instead of an error. CometBFT v1.0.1's consensus
// reactor has peer routines (queryMaj23Routine) that can wake after the
// node stopped and closed its block store; the store panics on the read
// error, which would take the whole process down while it shuts a node
// down (seen in tests that stop one of several in-process validators).
func closeSafeDBProvider(ctx *cmtcfg.DBContext) (dbm.DB, error) {
	db, err := cmtcfg.DefaultDBProvider(ctx)
	if err != nil {
		return nil, err
	}
	return &closeSafeDB{DB: db}, nil
}

type closeSafeDB struct {
	dbm.DB
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

func (d *closeSafeDB) Close() error {
	d.closed.Store(true)
	return d.DB.Close()
}
