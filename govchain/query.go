package govchain

import (
	"context"
	"fmt"

	rpcclient "github.com/cometbft/cometbft/rpc/client"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
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

// List returns every record under a List* prefix at the latest height. Lists
// carry no proofs; read a single record with Get for a proven value.
func List[T proto.Message](ctx context.Context, c *Client, prefix string, newT func() T) ([]T, error) {
	res, err := c.rpc.ABCIQueryWithOptions(ctx, QueryList, []byte(prefix), rpcclient.ABCIQueryOptions{})
	if err != nil {
		return nil, fmt.Errorf("govchain: list %q: %w", prefix, err)
	}
	if res.Response.Code != CodeOK {
		return nil, fmt.Errorf("govchain: list %q: %s", prefix, res.Response.Log)
	}
	var lr ListResult
	if err := proto.Unmarshal(res.Response.Value, &lr); err != nil {
		return nil, fmt.Errorf("govchain: list %q: %w", prefix, err)
	}
	out := make([]T, 0, len(lr.Items))
	for _, kv := range lr.Items {
		m := newT()
		if err := proto.Unmarshal(kv.Value, m); err != nil {
			return nil, fmt.Errorf("govchain: list %q: record %q: %w", prefix, kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}
