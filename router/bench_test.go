package router

import (
	"fmt"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
)

// A router cycle at full load: 4096 records (MaxPoll) of 256-byte payloads
// on 4 pipes from two apps, to 3 destination relays.
const (
	benchRecords = 4096
	benchPayload = 256
)

type benchInput struct {
	reg     registry
	encoded [][]byte
	dest    []string
}

func newBenchInput(b *testing.B) *benchInput {
	b.Helper()
	apps := []crypto.Signer{crypto.DevSigner("bench-app-1"), crypto.DevSigner("bench-app-2")}
	in := &benchInput{reg: registry{}}
	const pipes = 4
	for i := range pipes {
		id := fmt.Sprint("bench-pipe-", i)
		in.reg[id] = pipe(id, "relay-a", fmt.Sprint("relay-", i%3), apps[i%2], govchain.PipeStatus_PIPE_ACTIVE)
		in.reg[id].Limits.MaxPayload = 64 << 10
	}
	payload := make([]byte, benchPayload)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for i := range benchRecords {
		id := fmt.Sprint("bench-pipe-", i%pipes)
		p := packet(b, apps[(i%pipes)%2], id, uint64(i/pipes+1), string(payload))
		enc, err := amdp.EncodePacket(nil, p)
		if err != nil {
			b.Fatal(err)
		}
		in.encoded = append(in.encoded, enc)
		in.dest = append(in.dest, in.reg[id].Destination.RelayId)
	}
	return in
}

// candidates decodes and resolves every record, as cycle does before it
// verifies.
func (in *benchInput) candidates(b *testing.B, chk *checker) []check.Item {
	cands := make([]check.Item, len(in.encoded))
	for i, v := range in.encoded {
		p, err := amdp.DecodePacket(v, amdp.DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		pipe, err := chk.resolve(p)
		cands[i] = check.Item{Packet: p, Pipe: pipe, Err: err}
	}
	return cands
}

// BenchmarkVerifyAll is the stage-1 signature check of one full cycle,
// on all cores: the router's physical limit.
func BenchmarkVerifyAll(b *testing.B) {
	in := newBenchInput(b)
	cands := in.candidates(b, newChecker("relay-a", in.reg, 0))
	b.ReportAllocs()
	for b.Loop() {
		for i := range cands {
			cands[i].Err = nil
		}
		check.Signatures(cands, nil)
	}
	for _, c := range cands {
		if c.Err != nil {
			b.Fatal(c.Err)
		}
	}
	b.ReportMetric(float64(b.N*len(cands))/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkStage1 is a whole cycle short of sending: decode, resolve,
// verify, sequence and batch 4096 records.
func BenchmarkStage1(b *testing.B) {
	in := newBenchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		chk := newChecker("relay-a", in.reg, 0)
		cands := in.candidates(b, chk)
		check.Signatures(cands, nil)
		bt := newBatcher(512, 4<<20)
		n := 0
		for i := range cands {
			c := &cands[i]
			if c.Err == nil {
				c.Err = chk.sequence(c.Packet)
			}
			if c.Err != nil {
				b.Fatal(c.Err)
			}
			if full := bt.add(c.Pipe.Destination.RelayId, c.Packet, len(in.encoded[i])); full != nil {
				n += len(full.packets)
			}
		}
		for _, pb := range bt.drain() {
			n += len(pb.packets)
		}
		if n != len(cands) {
			b.Fatalf("batched %d of %d", n, len(cands))
		}
	}
	b.ReportMetric(float64(b.N*benchRecords)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkBatcher is the batching core alone: 4096 packets to 3
// destinations in batches of 512.
func BenchmarkBatcher(b *testing.B) {
	in := newBenchInput(b)
	cands := in.candidates(b, newChecker("relay-a", in.reg, 0))
	b.ReportAllocs()
	for b.Loop() {
		bt := newBatcher(512, 4<<20)
		for i := range cands {
			bt.add(in.dest[i], cands[i].Packet, len(in.encoded[i]))
		}
		bt.drain()
	}
	b.ReportMetric(float64(b.N*benchRecords)/b.Elapsed().Seconds(), "packets/s")
}
