package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// GovOptions configures the governance throughput benchmark.
type GovOptions struct {
	Validators    int
	Txs           int
	BlockInterval time.Duration
	// Progress, if set, is called about once a second while txs commit.
	Progress func(committed, total int, height int64)
}

// GovResult is what GovThroughput measured.
type GovResult struct {
	Validators  int     `json:"validators"`
	Txs         int     `json:"txs"`
	Committed   int     `json:"committed"`
	Rejected    int     `json:"rejected"`
	Blocks      int64   `json:"blocks"`
	Seconds     float64 `json:"seconds"`
	TxPerSecond float64 `json:"tx_per_s"`
}

// GovThroughput starts a loopback network of opts.Validators validators,
// pre-signs opts.Txs membership applications (each from a fresh key, so no
// nonce orders them), hands them all to the mempools at once, round-robin
// over the validators, and measures the time until the last one commits.
func GovThroughput(ctx context.Context, opts GovOptions) (*GovResult, error) {
	if opts.Validators < 1 || opts.Txs < 1 {
		return nil, errors.New("bench gov: validators and txs must be at least 1")
	}
	if opts.BlockInterval == 0 {
		opts.BlockInterval = 100 * time.Millisecond
	}
	dir, err := os.MkdirTemp("", "ccgp-bench-gov-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: dir, ChainID: "ccgp-bench", Validators: opts.Validators, BlockInterval: opts.BlockInterval})
	if err != nil {
		return nil, err
	}
	var clients []*govchain.Client
	for _, n := range tn.Nodes {
		ln, err := govchain.StartNode(ctx, n.Home, nil)
		if err != nil {
			return nil, err
		}
		defer ln.Stop()
		c, err := ln.Client()
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}
	// Only all validators together make blocks: wait for readiness after
	// every node has started.
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range clients {
		if err := c.WaitReady(readyCtx); err != nil {
			return nil, err
		}
	}
	res, err := burst(ctx, clients, tn.ChainID, opts.Txs, opts.Progress)
	if res != nil {
		res.Validators = opts.Validators
	}
	return res, err
}

func bulk(ctx context.Context, c *govchain.Client, chainID string, n int) (*GovResult, error) {
	return burst(ctx, []*govchain.Client{c}, chainID, n, nil)
}

// burst pre-signs n membership applications from fresh keys, hands them to
// the mempools of clients round-robin, and waits for all to commit.
func burst(ctx context.Context, clients []*govchain.Client, chainID string, n int, progress func(int, int, int64)) (*GovResult, error) {
	var err error
	txs := make([][]byte, n)
	for i := range txs {
		s := crypto.DevSigner(fmt.Sprintf("bench-applicant-%d", i))
		if txs[i], err = govchain.NewTx(s, chainID, 1, govchain.Wrap(&govchain.MsgApplyOrg{Id: fmt.Sprintf("bench-%d", i), Name: "bench"})); err != nil {
			return nil, err
		}
	}
	c0 := clients[0]
	h0, err := c0.Height(ctx)
	if err != nil {
		return nil, err
	}

	start := time.Now()
	var wg sync.WaitGroup
	var brErr atomic.Value
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(txs); i += workers {
				c := clients[i%len(clients)]
				if _, err := c.RPC().BroadcastTxAsync(ctx, txs[i]); err != nil {
					brErr.Store(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err, _ := brErr.Load().(error); err != nil {
		return nil, fmt.Errorf("bench gov: broadcast: %w", err)
	}

	res := &GovResult{Txs: n}
	next := h0 + 1
	var last time.Time
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
	deadline := time.Now().Add(5 * time.Minute)
	for res.Committed+res.Rejected < n {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("bench gov: only %d of %d txs committed in 5 minutes", res.Committed+res.Rejected, n)
		}
		h, err := c0.Height(ctx)
		if err != nil {
			return nil, err
		}
		for ; next <= h; next++ {
			br, err := c0.RPC().BlockResults(ctx, &next)
			if err != nil {
				// The height is announced a moment before its results are
				// stored: read it again on the next tick.
				break
			}
			for _, r := range br.TxResults {
				if r.Code == govchain.CodeOK {
					res.Committed++
				} else {
					res.Rejected++
				}
			}
			if len(br.TxResults) > 0 {
				last = time.Now()
			}
		}
		if progress != nil && time.Since(lastReport) > time.Second {
			progress(res.Committed+res.Rejected, n, h)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
	res.Blocks = next - 1 - h0
	res.Seconds = last.Sub(start).Seconds()
	res.TxPerSecond = float64(res.Committed) / res.Seconds
	return res, nil
}
