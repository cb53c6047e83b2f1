package govchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Cache is the governance view a relay keeps in memory: orgs, pipes, relay
// services and accounts, kept current as blocks commit, so the hot path
// reads maps and never waits on the chain. Reads see one consistent
// snapshot (every record as of one state height) and never block.
//
// Every record in the view is proven: the first load lists the keys (the
// list itself is not proven) and proves each record at one height; later
// refreshes read the chain's change log (keyChanges, proven at every
// height) and prove only the records it names. With a Client anchored by a
// TrustRoot, the node can therefore withhold records (the view then lacks
// them: unknown pipes, services and accounts are refused) but cannot forge
// one or hide a change. Without a root, proofs are checked against the
// validators the node reports (development).
//
// What the view answers:
//   - Account(addr) only for an ACCOUNT_ACTIVE account (pending, rejected
//     and revoked accounts are absent);
//   - Service(id) only while its signing account is ACCOUNT_ACTIVE and its
//     org is ORG_ACTIVE (a suspended or expelled org's relays are absent);
//   - Pipe(id) whatever its status: callers check it.
//
// Account records may carry a stale nonce: nonces change with every tx and
// the change log leaves them out. Read nonces from the chain.
type Cache struct {
	c    *Client
	log  *slog.Logger
	snap atomic.Pointer[cacheSnap]
	// refreshes counts reloads, for tests and metrics.
	refreshes atomic.Uint64
	// refreshMu serialises Refresh, so the view never moves back.
	refreshMu sync.Mutex

	anchorsMu sync.Mutex // guards anchors
	anchors   map[string]*BatchAnchor
}

type cacheSnap struct {
	height   int64
	orgs     map[string]*Org
	pipes    map[string]*Pipe
	services map[string]*Service
	accounts map[crypto.Address]*Account
}

// maxCatchUp is how many heights a refresh walks the change log for; a
// view further behind is loaded afresh.
const maxCatchUp = 512

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

// Refresh brings the view to the newest state height that a committed
// header proves (the latest block's parent state): from the change log
// when the view is at most maxCatchUp heights behind, else by a full load.
func (k *Cache) Refresh(ctx context.Context) error {
	k.refreshMu.Lock()
	defer k.refreshMu.Unlock()
	target, err := k.c.provableHeight(ctx)
	if err != nil {
		return err
	}
	cur := k.snap.Load()
	if cur != nil && target <= cur.height {
		return nil
	}
	var s *cacheSnap
	if cur == nil || target-cur.height > maxCatchUp {
		s, err = k.load(ctx, target)
	} else {
		s, err = k.advance(ctx, cur, target)
	}
	if err != nil {
		return err
	}
	k.snap.Store(s)
	k.refreshes.Add(1)
	return nil
}

// cachePrefixes are the record kinds the view holds.
var cachePrefixes = []string{ListOrgs, ListAccounts, ListServices, ListPipes}

// load reads the whole view at height h: keys listed, records proven.
func (k *Cache) load(ctx context.Context, h int64) (*cacheSnap, error) {
	var keys [][]byte
	for _, p := range cachePrefixes {
		ks, err := k.c.listKeys(ctx, h, p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	vals, err := k.c.proveMany(ctx, h, keys)
	if err != nil {
		return nil, fmt.Errorf("govchain cache: load at %d: %w", h, err)
	}
	s := &cacheSnap{height: h, orgs: map[string]*Org{}, pipes: map[string]*Pipe{}, services: map[string]*Service{},
		accounts: map[crypto.Address]*Account{}}
	for i, key := range keys {
		if err := s.apply(key, vals[i]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// advance moves cur to target with the records the change log names for
// the heights in between, proven at target.
func (k *Cache) advance(ctx context.Context, cur *cacheSnap, target int64) (*cacheSnap, error) {
	changed := map[string]struct{}{}
	for h := cur.height + 1; h <= target; h++ {
		v, _, err := k.c.GetRaw(ctx, h, []byte(keyChanges))
		if errors.Is(err, ErrNoRecord) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("govchain cache: change log at %d: %w", h, err)
		}
		logged, keys, err := decodeChanges(v)
		if err != nil {
			return nil, fmt.Errorf("govchain cache: change log at %d: %w", h, err)
		}
		if logged != uint64(h) {
			continue // no tracked change in block h
		}
		for _, key := range keys {
			changed[string(key)] = struct{}{}
		}
	}
	s := &cacheSnap{height: target, orgs: cur.orgs, pipes: cur.pipes, services: cur.services, accounts: cur.accounts}
	if len(changed) == 0 {
		return s, nil
	}
	keys := make([][]byte, 0, len(changed))
	for key := range changed {
		keys = append(keys, []byte(key))
	}
	vals, err := k.c.proveMany(ctx, target, keys)
	if err != nil {
		return nil, fmt.Errorf("govchain cache: refresh at %d: %w", target, err)
	}
	s.orgs, s.pipes, s.services, s.accounts = maps.Clone(cur.orgs), maps.Clone(cur.pipes), maps.Clone(cur.services), maps.Clone(cur.accounts)
	for i, key := range keys {
		if err := s.apply(key, vals[i]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// apply sets (or, for a nil value, removes) the record at key.
func (s *cacheSnap) apply(key, val []byte) error {
	kind, id := string(key[:2]), string(key[2:])
	var m proto.Message
	switch kind {
	case ListOrgs:
		m = &Org{}
	case ListAccounts:
		m = &Account{}
	case ListServices:
		m = &Service{}
	case ListPipes:
		m = &Pipe{}
	default:
		return nil
	}
	if val != nil {
		if err := proto.Unmarshal(val, m); err != nil {
			return fmt.Errorf("govchain cache: record %q: %w", key, err)
		}
	}
	switch r := m.(type) {
	case *Org:
		setOrDelete(s.orgs, id, r, val == nil)
	case *Service:
		setOrDelete(s.services, id, r, val == nil)
	case *Pipe:
		setOrDelete(s.pipes, id, r, val == nil)
	case *Account:
		addr, err := crypto.AddressFromBytes(key[2:])
		if err != nil {
			return fmt.Errorf("govchain cache: account key %q: %w", key, err)
		}
		setOrDelete(s.accounts, addr, r, val == nil)
	}
	return nil
}

func setOrDelete[K comparable, V any](m map[K]V, k K, v V, del bool) {
	if del {
		delete(m, k)
	} else {
		m[k] = v
	}
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

// Service returns the relay service with id, if it is not revoked, its
// signing account is active and its org is active. (A revoke tx marks all
// three; each is checked so that none alone is trusted to.)
func (k *Cache) Service(relayID string) (*Service, bool) {
	s := k.snap.Load()
	v, ok := s.services[relayID]
	if !ok || v.Status == ServiceStatus_SERVICE_REVOKED {
		return nil, false
	}
	if o := s.orgs[v.Org]; o == nil || o.Status != OrgStatus_ORG_ACTIVE {
		return nil, false
	}
	addr, err := crypto.AddressFromBytes(v.Account)
	if err != nil {
		return nil, false
	}
	if a := s.accounts[addr]; a == nil || a.Status != AccountStatus_ACCOUNT_ACTIVE {
		return nil, false
	}
	return v, true
}

// Account returns the account at addr if it is active.
func (k *Cache) Account(addr crypto.Address) (*Account, bool) {
	a, ok := k.snap.Load().accounts[addr]
	if !ok || a.Status != AccountStatus_ACCOUNT_ACTIVE {
		return nil, false
	}
	return a, true
}

// Revoked reports whether the account at addr is on record as revoked
// (by a revoke tx, or with its org's expulsion).
func (k *Cache) Revoked(addr crypto.Address) bool {
	a, ok := k.snap.Load().accounts[addr]
	return ok && a.Status == AccountStatus_ACCOUNT_REVOKED
}

// Org returns the org with id, whatever its status.
func (k *Cache) Org(id string) (*Org, bool) { o, ok := k.snap.Load().orgs[id]; return o, ok }

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

// BatchAnchor reads an open-batch anchor, proven. An unproven read comes
// first: its "absent" is taken as is (the worst a lying node can do is
// delay delivery), while a present anchor is proven at the height the node
// read it, which waits for the next block's header (bounded by the
// client's commit timeout). An open anchor's root and count never change,
// so found anchors are remembered (bounded).
func (k *Cache) BatchAnchor(ctx context.Context, fromRelay string, batchSeq uint64) (*BatchAnchor, bool, error) {
	key := string(KeyBatch(fromRelay, batchSeq))
	k.anchorsMu.Lock()
	if a, ok := k.anchors[key]; ok {
		k.anchorsMu.Unlock()
		return a, true, nil
	}
	k.anchorsMu.Unlock()
	res, err := k.c.rpc.ABCIQueryWithOptions(ctx, QueryKey, []byte(key), rpcclient.ABCIQueryOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("govchain: query: %w", err)
	}
	if res.Response.Value == nil || res.Response.Height < 1 {
		return nil, false, nil
	}
	a := &BatchAnchor{}
	if _, err := k.c.GetAt(ctx, res.Response.Height, []byte(key), a); errors.Is(err, ErrNoRecord) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("govchain: batch anchor %s/%d: %w", fromRelay, batchSeq, err)
	}
	k.anchorsMu.Lock()
	if len(k.anchors) >= 100_000 {
		k.anchors = map[string]*BatchAnchor{}
	}
	k.anchors[key] = a
	k.anchorsMu.Unlock()
	return a, true, nil
}
