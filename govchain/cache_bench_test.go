package govchain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
)

// BenchmarkCacheProvenLoad measures a full proven load of the cache's
// view (2000 records: 1000 orgs and their applicants' accounts, plus the
// genesis ones) through the in-process client and over HTTP, and one
// refresh from the change log.
func BenchmarkCacheProvenLoad(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tn, err := GenerateTestnet(TestnetOptions{Dir: b.TempDir(), ChainID: "ccgp-bench", Validators: 1, BlockInterval: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	n, err := StartNode(ctx, tn.Nodes[0].Home, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Stop() })
	c, err := n.Client()
	if err != nil {
		b.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	const orgs = 1000
	var last []byte
	for i := range orgs {
		s := crypto.DevSigner(fmt.Sprintf("bench-cache-%d", i))
		raw, err := NewTx(s, tn.ChainID, 1, Wrap(&MsgApplyOrg{Id: fmt.Sprintf("bench-%d", i), Name: "bench"}))
		if err != nil {
			b.Fatal(err)
		}
		if last, err = c.BroadcastRaw(ctx, s, raw); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := c.WaitTx(ctx, last); err != nil {
		b.Fatal(err)
	}
	if err := n.WaitForHeight(ctx, n.Height()+2); err != nil {
		b.Fatal(err)
	}
	root, err := n.TrustRoot()
	if err != nil {
		b.Fatal(err)
	}
	hc, err := Dial(ctx, tn.Nodes[0].RPC, WithTrustRoot(root))
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *Client
	}{{"local", c}, {"http", hc}} {
		k, err := NewCache(ctx, tc.c, nil)
		if err != nil {
			b.Fatal(err)
		}
		h := k.Height()
		records := len(k.snap.Load().orgs) + len(k.snap.Load().accounts)
		b.Run("full/"+tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := k.load(ctx, h); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(records), "records")
		})
		b.Run("changelog-step/"+tc.name, func(b *testing.B) {
			// One height of the change log with no record changed.
			cur := k.snap.Load()
			for b.Loop() {
				if _, err := k.advance(ctx, &cacheSnap{height: cur.height - 1, orgs: cur.orgs, pipes: cur.pipes, services: cur.services, accounts: cur.accounts}, cur.height); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
