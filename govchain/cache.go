package govchain

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Cache is the governance view a relay keeps in memory: pipes, relay
// services and accounts, reloaded from its node whenever a block commits,
// so the hot path reads maps and never waits on the chain. Reads see one
// consistent snapshot (all from one height) and never block.
//
// The cache trusts the node it reads from: run it against the org's own
// node. Single records can always be read with proofs through Client.Get.
type Cache struct {
	c    *Client
	log  *slog.Logger
	snap atomic.Pointer[cacheSnap]
	// refreshes counts reloads, for tests and metrics.
	refreshes atomic.Uint64

	anchorsMu sync.Mutex // guards anchors
	anchors   map[string]*BatchAnchor
}

type cacheSnap struct {
	height   int64
	pipes    map[string]*Pipe
	services map[string]*Service
	accounts map[crypto.Address]*Account
}

// NewCache loads the current view once; Run keeps it current.
func NewCache(ctx context.Context, c *Client, log *slog.Logger) (*Cache, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Cache{c: c, log: log, anchors: map[string]*BatchAnchor{}}
	if err := k.Refresh(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Refresh reloads the view now.
func (k *Cache) Refresh(ctx context.Context) error {
	h, err := k.c.Height(ctx)
	if err != nil {
		return err
	}
	pipes, err := List(ctx, k.c, ListPipes, func() *Pipe { return &Pipe{} })
	if err != nil {
		return err
	}
	svcs, err := List(ctx, k.c, ListServices, func() *Service { return &Service{} })
	if err != nil {
		return err
	}
	accts, err := List(ctx, k.c, ListAccounts, func() *Account { return &Account{} })
	if err != nil {
		return err
	}
	s := &cacheSnap{height: h, pipes: make(map[string]*Pipe, len(pipes)), services: make(map[string]*Service, len(svcs)),
		accounts: make(map[crypto.Address]*Account, len(accts))}
	for _, p := range pipes {
		s.pipes[p.Id] = p
	}
	for _, v := range svcs {
		s.services[v.RelayId] = v
	}
	for _, a := range accts {
		addr, err := crypto.AddressFromBytes(a.Address)
		if err != nil {
			return fmt.Errorf("govchain cache: account record: %w", err)
		}
		s.accounts[addr] = a
	}
	k.snap.Store(s)
	k.refreshes.Add(1)
	return nil
}

// Run reloads the view after every new block until ctx ends. If the block
// subscription fails it polls once a second instead, so the view never
// stops moving.
func (k *Cache) Run(ctx context.Context) error {
	blocks, err := k.c.Blocks(ctx)
	if err != nil {
		k.log.Warn("block subscription failed; polling the governance chain", "err", err)
		blocks = nil
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-blocks:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				k.log.Warn("block subscription ended; polling the governance chain")
				blocks = nil
				continue
			}
		case <-poll.C:
			h, err := k.c.Height(ctx)
			if err != nil || h == k.Height() {
				continue
			}
		}
		if err := k.Refresh(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("governance cache refresh failed; keeping the last view", "err", err, "height", k.Height())
		}
	}
}

// Height is the block height the view was read at.
func (k *Cache) Height() int64 { return k.snap.Load().height }

// Pipe returns the pipe with id.
func (k *Cache) Pipe(id string) (*Pipe, bool) { p, ok := k.snap.Load().pipes[id]; return p, ok }

// Service returns the relay service with id.
func (k *Cache) Service(relayID string) (*Service, bool) {
	s, ok := k.snap.Load().services[relayID]
	return s, ok
}

// Account returns the account at addr.
func (k *Cache) Account(addr crypto.Address) (*Account, bool) {
	a, ok := k.snap.Load().accounts[addr]
	return a, ok
}

// Pipes returns every pipe in the view.
func (k *Cache) Pipes() []*Pipe {
	s := k.snap.Load()
	out := make([]*Pipe, 0, len(s.pipes))
	for _, p := range s.pipes {
		out = append(out, p)
	}
	return out
}

// WaitFor blocks until cond holds on the view or ctx ends; for start-up and
// tests ("until the pipe is active").
func (k *Cache) WaitFor(ctx context.Context, cond func(*Cache) bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond(k) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// BatchAnchor reads an open-batch anchor from the node (committed state;
// not proven: the cache trusts its node). Anchors never change once their
// receipts are anchored, and an open anchor's root and count never change,
// so found anchors are remembered (bounded).
func (k *Cache) BatchAnchor(ctx context.Context, fromRelay string, batchSeq uint64) (*BatchAnchor, bool, error) {
	key := string(KeyBatch(fromRelay, batchSeq))
	k.anchorsMu.Lock()
	if a, ok := k.anchors[key]; ok {
		k.anchorsMu.Unlock()
		return a, true, nil
	}
	k.anchorsMu.Unlock()
	a := &BatchAnchor{}
	found, err := k.c.getUnproven(ctx, []byte(key), a)
	if err != nil || !found {
		return nil, false, err
	}
	k.anchorsMu.Lock()
	if len(k.anchors) >= 100_000 {
		k.anchors = map[string]*BatchAnchor{}
	}
	k.anchors[key] = a
	k.anchorsMu.Unlock()
	return a, true, nil
}
