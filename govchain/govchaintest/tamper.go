package govchaintest

import (
	"context"
	"sync"

	cmtproto "github.com/cometbft/cometbft/api/cometbft/types/v1"
	"github.com/cometbft/cometbft/libs/bytes"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"
)

// Tamper is an rpcclient.Client that passes every call to a real node's
// client and lets a test rewrite some answers before the caller sees them:
// Status, Commit (signed headers), Validators and ABCIQuery. Each hook gets
// a deep copy it may change freely. Set hooks at any time; safe for
// concurrent use.
type Tamper struct {
	rpcclient.Client

	mu         sync.Mutex // guards the hooks
	status     func(*ctypes.ResultStatus)
	commit     func(*ctypes.ResultCommit)
	validators func(*ctypes.ResultValidators)
	query      func(path string, data bytes.HexBytes, res *ctypes.ResultABCIQuery)
}

// NewTamper wraps c; with no hooks set it changes nothing.
func NewTamper(c rpcclient.Client) *Tamper { return &Tamper{Client: c} }

// OnStatus sets the hook for Status answers (nil: none).
func (t *Tamper) OnStatus(f func(*ctypes.ResultStatus)) { t.mu.Lock(); t.status = f; t.mu.Unlock() }

// OnCommit sets the hook for Commit answers (nil: none).
func (t *Tamper) OnCommit(f func(*ctypes.ResultCommit)) { t.mu.Lock(); t.commit = f; t.mu.Unlock() }

// OnValidators sets the hook for Validators answers (nil: none).
func (t *Tamper) OnValidators(f func(*ctypes.ResultValidators)) {
	t.mu.Lock()
	t.validators = f
	t.mu.Unlock()
}

// OnQuery sets the hook for ABCIQuery and ABCIQueryWithOptions answers
// (nil: none).
func (t *Tamper) OnQuery(f func(path string, data bytes.HexBytes, res *ctypes.ResultABCIQuery)) {
	t.mu.Lock()
	t.query = f
	t.mu.Unlock()
}

// Clear removes every hook.
func (t *Tamper) Clear() {
	t.mu.Lock()
	t.status, t.commit, t.validators, t.query = nil, nil, nil, nil
	t.mu.Unlock()
}

func (t *Tamper) Status(ctx context.Context) (*ctypes.ResultStatus, error) {
	res, err := t.Client.Status(ctx)
	t.mu.Lock()
	f := t.status
	t.mu.Unlock()
	if err != nil || f == nil {
		return res, err
	}
	cp := *res
	f(&cp)
	return &cp, nil
}

func (t *Tamper) Commit(ctx context.Context, height *int64) (*ctypes.ResultCommit, error) {
	res, err := t.Client.Commit(ctx, height)
	t.mu.Lock()
	f := t.commit
	t.mu.Unlock()
	if err != nil || f == nil {
		return res, err
	}
	cp, err := copyCommit(res)
	if err != nil {
		return nil, err
	}
	f(cp)
	return cp, nil
}

func copyCommit(res *ctypes.ResultCommit) (*ctypes.ResultCommit, error) {
	pb := res.SignedHeader.ToProto()
	b, err := pb.Marshal()
	if err != nil {
		return nil, err
	}
	var pb2 cmtproto.SignedHeader
	if err := pb2.Unmarshal(b); err != nil {
		return nil, err
	}
	sh, err := types.SignedHeaderFromProto(&pb2)
	if err != nil {
		return nil, err
	}
	return &ctypes.ResultCommit{SignedHeader: *sh, CanonicalCommit: res.CanonicalCommit}, nil
}

func (t *Tamper) Validators(ctx context.Context, height *int64, page, perPage *int) (*ctypes.ResultValidators, error) {
	res, err := t.Client.Validators(ctx, height, page, perPage)
	t.mu.Lock()
	f := t.validators
	t.mu.Unlock()
	if err != nil || f == nil {
		return res, err
	}
	cp := *res
	cp.Validators = make([]*types.Validator, len(res.Validators))
	for i, v := range res.Validators {
		cp.Validators[i] = v.Copy()
	}
	f(&cp)
	return &cp, nil
}

func (t *Tamper) ABCIQuery(ctx context.Context, path string, data bytes.HexBytes) (*ctypes.ResultABCIQuery, error) {
	return t.ABCIQueryWithOptions(ctx, path, data, rpcclient.DefaultABCIQueryOptions)
}

func (t *Tamper) ABCIQueryWithOptions(ctx context.Context, path string, data bytes.HexBytes, opts rpcclient.ABCIQueryOptions) (*ctypes.ResultABCIQuery, error) {
	res, err := t.Client.ABCIQueryWithOptions(ctx, path, data, opts)
	t.mu.Lock()
	f := t.query
	t.mu.Unlock()
	if err != nil || f == nil {
		return res, err
	}
	cp := *res
	r := res.Response
	r.Value = append([]byte(nil), r.Value...)
	if res.Response.Value == nil {
		r.Value = nil
	}
	if r.ProofOps != nil {
		ops := *r.ProofOps
		ops.Ops = append(ops.Ops[:0:0], ops.Ops...)
		for i := range ops.Ops {
			ops.Ops[i].Data = append([]byte(nil), ops.Ops[i].Data...)
		}
		r.ProofOps = &ops
	}
	cp.Response = r
	f(path, data, &cp)
	return &cp, nil
}

var _ rpcclient.Client = (*Tamper)(nil)
