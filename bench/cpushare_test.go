package bench

import (
	"bytes"
	"testing"

	"github.com/google/pprof/profile"
)

func TestCPUBreakdown(t *testing.T) {
	fn := func(id uint64, name string) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: &profile.Function{ID: id, Name: name}}}}
	}
	verify := fn(1, "github.com/ccgpmesh/ccgp/crypto.VerifyBatch")
	route := fn(2, "github.com/ccgpmesh/ccgp/router.(*Shard).prepare")
	produce := fn(3, "github.com/ccgpmesh/ccgp/ingest/simchain.(*Chain).produceBlock")
	pebble := fn(4, "github.com/cockroachdb/pebble.(*DB).compact1")
	gc := fn(5, "runtime.gcBgMarkWorker")
	leaf := fn(6, "runtime.memmove")
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Location:   []*profile.Location{verify, route, produce, pebble, gc, leaf},
		Sample: []*profile.Sample{
			// labelled: the label wins over the stack
			{Value: []int64{1, 3e9}, Location: []*profile.Location{verify, route}, Label: map[string][]string{labelKey: {"relay/router"}}},
			{Value: []int64{1, 1e9}, Location: []*profile.Location{leaf, route}, Label: map[string][]string{labelKey: {"relay/router"}}},
			// labels lost: the outermost frame of ours names the part
			{Value: []int64{1, 2e9}, Location: []*profile.Location{leaf, produce}},
			{Value: []int64{1, 1e9}, Location: []*profile.Location{leaf, route}},
			{Value: []int64{1, 1e9}, Location: []*profile.Location{pebble}, Label: map[string][]string{"pebble": {"compact"}}},
			{Value: []int64{1, 1e9}, Location: []*profile.Location{leaf, gc}},
			{Value: []int64{1, 1e9}, Location: []*profile.Location{leaf}},
		},
	}
	for _, l := range p.Location {
		p.Function = append(p.Function, l.Line[0].Function)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	var r Result
	r.GOMAXPROCS, r.VerifiesPerPacket, r.VerifyCeilingPerS = 2, 2, 1000
	if err := r.applyCPU(buf.Bytes(), 1000); err != nil {
		t.Fatal(err)
	}
	got := map[string]CPUShare{}
	for _, c := range r.CPUByPart {
		got[c.Part] = c
	}
	want := map[string]float64{"relay/router": 5, partChain: 2, partPebble: 1, partGC: 1, partOther: 1}
	if len(got) != len(want) {
		t.Fatalf("parts %v, want %v", got, want)
	}
	for part, sec := range want {
		if got[part].SPer1000 != sec {
			t.Errorf("%s: %v s per 1000, want %v", part, got[part].SPer1000, sec)
		}
	}
	if v := got["relay/router"].VerifyShare; v != 0.6 {
		t.Errorf("router's verify share %v, want 0.6", v)
	}
	r.finish()
	// relays: 5 s per 1000 packets, 60 % checks; 2 cores → 400 packets/s,
	// 800 verifications/s against a ceiling of 1000.
	if r.RelayCPUSPer1000 != 5 || r.VerifyShareOfRelayCPU != 0.6 || r.RelayCeilingPerS != 400 || r.RatioVerifyRelay != 0.8 {
		t.Fatalf("relay figures: %v s, share %v, ceiling %v, ratio %v", r.RelayCPUSPer1000, r.VerifyShareOfRelayCPU, r.RelayCeilingPerS, r.RatioVerifyRelay)
	}
}
