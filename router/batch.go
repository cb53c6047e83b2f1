package router

import (
	"sort"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// batcher is the deterministic batching core: it groups accepted packets by
// destination relay, in arrival order, into batches bounded by packet count
// and encoded bytes.
type batcher struct {
	maxPackets int
	maxBytes   int
	open       map[string]*pending
}

type pending struct {
	seq     uint64      // batch sequence, assigned in cycle order
	batch   *amdp.Batch // sealed, in cycle order
	to      string
	packets []*amdp.Packet
	bytes   int
}

func newBatcher(maxPackets, maxBytes int) *batcher {
	return &batcher{maxPackets: maxPackets, maxBytes: maxBytes, open: map[string]*pending{}}
}

// add appends p for relay to and returns a batch that became full, if any.
func (b *batcher) add(to string, p *amdp.Packet, size int) *pending {
	cur := b.open[to]
	var full *pending
	if cur != nil && (len(cur.packets) >= b.maxPackets || cur.bytes+size > b.maxBytes) {
		full, cur = cur, nil
	}
	if cur == nil {
		cur = &pending{to: to}
		b.open[to] = cur
	}
	cur.packets = append(cur.packets, p)
	cur.bytes += size
	return full
}

// drain returns every open batch, ordered by destination for determinism.
func (b *batcher) drain() []*pending {
	out := make([]*pending, 0, len(b.open))
	for _, p := range b.open {
		out = append(out, p)
	}
	b.open = map[string]*pending{}
	sort.Slice(out, func(i, j int) bool { return out[i].to < out[j].to })
	return out
}
