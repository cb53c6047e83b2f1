package govchain

import (
	"context"
	"errors"
	"fmt"

	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Typed, proven reads. Each returns ErrNoRecord (wrapped with what was
// asked for) when the chain proves the record absent.

func getTyped[T proto.Message](ctx context.Context, c *Client, what string, key []byte, m T) (T, error) {
	if _, err := c.Get(ctx, key, m); err != nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return m, nil
}

func (c *Client) Params(ctx context.Context) (*Params, error) {
	return getTyped(ctx, c, "params", KeyParams(), &Params{})
}
func (c *Client) Org(ctx context.Context, id string) (*Org, error) {
	return getTyped(ctx, c, "org "+id, KeyOrg(id), &Org{})
}
func (c *Client) Account(ctx context.Context, a crypto.Address) (*Account, error) {
	return getTyped(ctx, c, "account "+a.String(), KeyAccount(a), &Account{})
}
func (c *Client) Proposal(ctx context.Context, id uint64) (*Proposal, error) {
	return getTyped(ctx, c, fmt.Sprintf("proposal %d", id), KeyProposal(id), &Proposal{})
}
func (c *Client) Node(ctx context.Context, id string) (*Node, error) {
	return getTyped(ctx, c, "node "+id, KeyNode(id), &Node{})
}
func (c *Client) Service(ctx context.Context, id string) (*Service, error) {
	return getTyped(ctx, c, "relay "+id, KeyService(id), &Service{})
}
func (c *Client) Subchain(ctx context.Context, id string) (*Subchain, error) {
	return getTyped(ctx, c, "subchain "+id, KeySubchain(id), &Subchain{})
}
func (c *Client) App(ctx context.Context, id string) (*App, error) {
	return getTyped(ctx, c, "app "+id, KeyApp(id), &App{})
}
func (c *Client) Contract(ctx context.Context, id string) (*Contract, error) {
	return getTyped(ctx, c, "contract "+id, KeyContract(id), &Contract{})
}
func (c *Client) Pipe(ctx context.Context, id string) (*Pipe, error) {
	return getTyped(ctx, c, "pipe "+id, KeyPipe(id), &Pipe{})
}

// AccountByKey finds, with proofs, the account that a key signs for: the
// account at the key's own address (keyAddr = AddressOf(suite, key)), or
// else the account the key was rotated onto. It returns ErrNoRecord when
// neither exists. Whether the key is still the account's current one is
// for the caller to compare (Account.Suite and Account.PublicKey).
func (c *Client) AccountByKey(ctx context.Context, keyAddr crypto.Address) (crypto.Address, *Account, error) {
	a, err := c.Account(ctx, keyAddr)
	if err == nil || !errors.Is(err, ErrNoRecord) {
		return keyAddr, a, err
	}
	raw, _, err := c.GetRaw(ctx, 0, KeyAlias(keyAddr))
	if err != nil {
		return crypto.Address{}, nil, fmt.Errorf("key %s: %w", keyAddr, err)
	}
	owner, err := crypto.AddressFromBytes(raw)
	if err != nil {
		return crypto.Address{}, nil, fmt.Errorf("govchain: alias of key %s: %w", keyAddr, err)
	}
	a, err = c.Account(ctx, owner)
	return owner, a, err
}

// List returns every record under a List* prefix at the latest height,
// asking page after page (each starts after the last key of the one
// before) until the node says there is no more. Lists carry no proofs;
// read a single record with Get for a proven value. The pages are read at
// the latest height each, so a list taken while blocks commit may mix
// heights, as each record's own read would.
func List[T proto.Message](ctx context.Context, c *Client, prefix string, newT func() T) ([]T, error) {
	return listPages(ctx, prefix, newT, func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryList, req, rpcclient.ABCIQueryOptions{})
		if err != nil {
			return 0, "", nil, err
		}
		return res.Response.Code, res.Response.Log, res.Response.Value, nil
	})
}

// listQuery sends one encoded ListRequest and returns the response's code,
// log and value.
type listQuery func(ctx context.Context, req []byte) (code uint32, log string, value []byte, err error)

// listPages is List's loop, apart from the transport so tests drive it
// against an Application directly.
func listPages[T proto.Message](ctx context.Context, prefix string, newT func() T, query listQuery) ([]T, error) {
	kvs, err := listKVs(ctx, prefix, query)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		m := newT()
		if err := proto.Unmarshal(kv.Value, m); err != nil {
			return nil, fmt.Errorf("govchain: list %q: record %q: %w", prefix, kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// listKVs asks for page after page under prefix (each starts after the
// last key of the one before) until the node says there is no more.
func listKVs(ctx context.Context, prefix string, query listQuery) ([]*KV, error) {
	var out []*KV
	req := &ListRequest{Prefix: prefix}
	for {
		raw, err := proto.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("govchain: list %q: %w", prefix, err)
		}
		code, log, value, err := query(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("govchain: list %q: %w", prefix, err)
		}
		if code != CodeOK {
			return nil, fmt.Errorf("govchain: list %q: %s", prefix, log)
		}
		var lr ListResult
		if err := proto.Unmarshal(value, &lr); err != nil {
			return nil, fmt.Errorf("govchain: list %q: %w", prefix, err)
		}
		out = append(out, lr.Items...)
		if !lr.Truncated {
			return out, nil
		}
		if len(lr.Items) == 0 {
			return nil, fmt.Errorf("govchain: list %q: the node said more follow but sent none", prefix)
		}
		req.After = lr.Items[len(lr.Items)-1].Key
	}
}

// PacketStatus derives a packet's state from the chain with every record
// proven at one height: its exception record (or its proven absence), how
// far its pipe is anchored, the ledger entry that holds it and its batch
// anchor. A packet the chain has not seen has state unspecified.
func (c *Client) PacketStatus(ctx context.Context, pipe string, seq uint64) (*PacketStatus, int64, error) {
	id := amdp.PacketID(pipe, seq)
	out := &PacketStatus{Pipe: pipe, Seq: seq, PacketId: id[:]}
	ex := &TxException{}
	h, err := c.Get(ctx, KeyException(pipe, seq), ex)
	switch {
	case err == nil:
		out.Exception = ex
	case !errors.Is(err, ErrNoRecord):
		return nil, 0, err
	}
	thr, _, err := c.GetRaw(ctx, h, KeyThrough(pipe))
	if err != nil && !errors.Is(err, ErrNoRecord) {
		return nil, 0, err
	}
	if len(thr) == 8 && seq <= beUint64(thr) {
		q := append(append([]byte(pipe), 0), be64(seq)...)
		res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryLedgerFind, q, rpcclient.ABCIQueryOptions{Height: h})
		if err != nil {
			return nil, 0, fmt.Errorf("govchain: ledger: %w", err)
		}
		if res.Response.Code != CodeOK {
			return nil, 0, fmt.Errorf("govchain: ledger: %s", res.Response.Log)
		}
		e := &LedgerEntry{}
		if _, err := c.GetAt(ctx, h, res.Response.Value, e); err != nil {
			return nil, 0, fmt.Errorf("ledger entry: %w", err)
		}
		if e.Pipe != pipe || seq < e.First || seq > e.Last {
			return nil, 0, fmt.Errorf("%w: ledger entry %d-%d of %s does not hold seq %d", ErrProof, e.First, e.Last, e.Pipe, seq)
		}
		out.Ledger = e
		a := &BatchAnchor{}
		if _, err := c.GetAt(ctx, h, KeyBatch(e.FromRelay, e.BatchSeq), a); err != nil {
			return nil, 0, fmt.Errorf("batch anchor: %w", err)
		}
		out.Anchor = a
	}
	out.State = DeriveState(out)
	return out, h, nil
}

// DeriveState is the state the records imply: an exception governs; else
// the ledger's receipt status; else OPEN once anchored.
func DeriveState(s *PacketStatus) PacketState {
	if s.Exception != nil {
		return s.Exception.State
	}
	if s.Ledger == nil {
		return PacketState_PACKET_STATE_UNSPECIFIED
	}
	st := s.Ledger.Statuses[s.Seq-s.Ledger.First]
	switch {
	case st == 0:
		return PacketState_PACKET_OPEN
	case st&0x7f == statusDelivered && st&StatusConfirmed != 0:
		return PacketState_PACKET_CONFIRMED
	case st&0x7f == statusDelivered:
		return PacketState_PACKET_DELIVERED
	default:
		return PacketState_PACKET_FAILED
	}
}

// LedgerRow is one packet of a pipe's ledger.
type LedgerRow struct {
	Seq       uint64
	State     PacketState
	FromRelay string
	BatchSeq  uint64
}

// Ledger lists pipe's packets from..to (at most 10000) with their derived
// states, from the ledger and exception records (not proven; use
// PacketStatus for one packet with proofs).
func (c *Client) Ledger(ctx context.Context, pipe string, from, to uint64) ([]LedgerRow, error) {
	if from == 0 || to < from || to-from >= 10000 {
		return nil, fmt.Errorf("govchain: ledger range must be 1 <= from <= to, at most 10000 packets")
	}
	entries, err := List(ctx, c, ListLedger(pipe), func() *LedgerEntry { return &LedgerEntry{} })
	if err != nil {
		return nil, err
	}
	exs, err := List(ctx, c, prefixExcept+pipe+"/", func() *TxException { return &TxException{} })
	if err != nil {
		return nil, err
	}
	byseq := map[uint64]*TxException{}
	for _, e := range exs {
		byseq[e.Seq] = e
	}
	var rows []LedgerRow
	for _, e := range entries {
		for seq := max(e.First, from); seq <= min(e.Last, to); seq++ {
			st := &PacketStatus{Seq: seq, Ledger: e, Exception: byseq[seq]}
			rows = append(rows, LedgerRow{Seq: seq, State: DeriveState(st), FromRelay: e.FromRelay, BatchSeq: e.BatchSeq})
		}
	}
	return rows, nil
}

// Exceptions lists every exception record (optionally only those in state).
func (c *Client) Exceptions(ctx context.Context, state PacketState) ([]*TxException, error) {
	all, err := List(ctx, c, ListExceptions, func() *TxException { return &TxException{} })
	if err != nil || state == PacketState_PACKET_STATE_UNSPECIFIED {
		return all, err
	}
	var out []*TxException
	for _, e := range all {
		if e.State == state {
			out = append(out, e)
		}
	}
	return out, nil
}

// AnchoredThrough is the highest sequence of pipe anchored so far, read
// from the node without a proof (cheap; for relays and tests).
func (c *Client) AnchoredThrough(ctx context.Context, pipe string) (uint64, error) {
	res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryKey, KeyThrough(pipe), rpcclient.ABCIQueryOptions{})
	if err != nil {
		return 0, fmt.Errorf("govchain: query: %w", err)
	}
	if len(res.Response.Value) != 8 {
		return 0, nil
	}
	return beUint64(res.Response.Value), nil
}

// ExceptionsIn lists the exception records of pipe with sequences
// first..last as the state at height h holds them (0: the latest), in
// sequence order, without proofs. It is how a reader learns what a
// confirmation did to exception records (confirmExceptions moves them to
// CONFIRMED without a message naming them): only the pipe's records from
// first on are read, page by page, and the walk stops past last. A height
// the node no longer keeps is an error.
func (c *Client) ExceptionsIn(ctx context.Context, h int64, pipe string, first, last uint64) ([]*TxException, error) {
	return exceptionsIn(ctx, pipe, first, last, func(ctx context.Context, req []byte) (uint32, string, []byte, error) {
		res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryList, req, rpcclient.ABCIQueryOptions{Height: h})
		if err != nil {
			return 0, "", nil, err
		}
		return res.Response.Code, res.Response.Log, res.Response.Value, nil
	})
}

// exceptionsPage is how many records ExceptionsIn asks for at once: a
// confirmed batch's range usually holds none or a few.
const exceptionsPage = 256

// exceptionsIn is ExceptionsIn's loop, apart from the transport so tests
// drive it against an Application directly.
func exceptionsIn(ctx context.Context, pipe string, first, last uint64, query listQuery) ([]*TxException, error) {
	if first == 0 || last < first {
		return nil, fmt.Errorf("govchain: exceptions of %s: range %d-%d (1 <= first <= last)", pipe, first, last)
	}
	req := &ListRequest{Prefix: prefixExcept + pipe + "/", After: KeyException(pipe, first-1), Limit: exceptionsPage}
	var out []*TxException
	for {
		raw, err := proto.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("govchain: exceptions of %s: %w", pipe, err)
		}
		code, log, value, err := query(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("govchain: exceptions of %s: %w", pipe, err)
		}
		if code != CodeOK {
			return nil, fmt.Errorf("govchain: exceptions of %s: %s", pipe, log)
		}
		var lr ListResult
		if err := proto.Unmarshal(value, &lr); err != nil {
			return nil, fmt.Errorf("govchain: exceptions of %s: %w", pipe, err)
		}
		for _, kv := range lr.Items {
			ex := &TxException{}
			if err := proto.Unmarshal(kv.Value, ex); err != nil {
				return nil, fmt.Errorf("govchain: exceptions of %s: record %q: %w", pipe, kv.Key, err)
			}
			if ex.Seq > last {
				return out, nil
			}
			out = append(out, ex)
		}
		if !lr.Truncated {
			return out, nil
		}
		if len(lr.Items) == 0 {
			return nil, fmt.Errorf("govchain: exceptions of %s: the node said more follow but sent none", pipe)
		}
		req.After = lr.Items[len(lr.Items)-1].Key
	}
}
