package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"runtime/pprof"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// The harness runs every part of the mesh in one process, so the process's
// CPU per packet mixes the relays' work with the simulated chains', the
// broker's and the governance node's. Every part runs under a pprof label
// (relay.Run labels its own parts "relay/…"; the cluster labels the
// chains, the broker, the governance nodes and the harness), and a CPU
// profile of the window, taken in every run, splits the CPU by label.
// That answers the question the verify ceiling asks: what the relays
// themselves cost beyond their signature checks.

// labelKey is the pprof label every part of the cluster runs under.
const labelKey = "ccgp"

// Labels of the parts that are not the relays (the relays' own are
// "relay/<part>", set in package relay).
const (
	partChain    = "chain"
	partKafka    = "kafka"
	partGovchain = "govchain"
	partHarness  = "harness"
	partRelay    = "relay"             // a relay's goroutines started outside its parts (construction)
	partPebble   = "pebble background" // flushes and compactions of every store
	partGC       = "runtime GC"
	partOther    = "other" // anything not told apart
)

// labelled runs f with the goroutine labelled part; goroutines that f
// starts inherit the label.
func labelled(ctx context.Context, part string, f func(context.Context)) {
	pprof.Do(ctx, pprof.Labels(labelKey, part), f)
}

// CPUShare is the window's CPU of one part of the cluster.
type CPUShare struct {
	Part         string  `json:"part"`
	SPer1000     float64 `json:"cpu_s_per_1000_packets"`
	Share        float64 `json:"share"`
	VerifyShare  float64 `json:"verify_share,omitempty"` // of this part's CPU, in stage-1 signature checks
	isRelay      bool
	cpu, verifyC float64
}

// cpuBreakdown reads a CPU profile and splits its samples by part.
// Samples whose stack passes through the crypto package's verification
// (crypto.VerifyBatch, BatchVerifier, Verify) count as signature checks.
func cpuBreakdown(prof []byte) (map[string]*CPUShare, error) {
	p, err := profile.Parse(bytes.NewReader(prof))
	if err != nil {
		return nil, fmt.Errorf("bench: read the window's CPU profile: %w", err)
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, fmt.Errorf("bench: the CPU profile has no cpu samples")
	}
	parts := map[string]*CPUShare{}
	for _, s := range p.Sample {
		name := partOf(s)
		cs := parts[name]
		if cs == nil {
			cs = &CPUShare{Part: name, isRelay: name == partRelay || strings.HasPrefix(name, partRelay+"/")}
			parts[name] = cs
		}
		sec := float64(s.Value[vi]) / 1e9
		cs.cpu += sec
		if verifying(s) {
			cs.verifyC += sec
		}
	}
	return parts, nil
}

// byRoot names the part of an unlabelled sample by the outermost frame of
// ours (or of a library that runs as one part) on its stack. Labels get
// lost: pebble runs its table cache under pprof.Do(context.Background(),
// …), which leaves the calling goroutine with no labels at all.
var byRoot = []struct{ prefix, part string }{
	{"github.com/ccgpmesh/ccgp/ingest/simchain.", partChain},
	{"github.com/ccgpmesh/ccgp/mesh.", "relay/mesh"},
	{"github.com/ccgpmesh/ccgp/router.", "relay/router"},
	{"github.com/ccgpmesh/ccgp/verifier.", "relay/verifier"},
	{"github.com/ccgpmesh/ccgp/compensator.", "relay/compensator"},
	{"github.com/ccgpmesh/ccgp/ingest.", "relay/listener"},
	{"github.com/ccgpmesh/ccgp/relay.", partRelay},
	{"github.com/ccgpmesh/ccgp/govchain.", partGovchain},
	{"github.com/cometbft/", partGovchain},
	{"github.com/twmb/franz-go/pkg/kfake.", partKafka},
	// Library goroutines that only the relays run here: QUIC (both ends of
	// every batch) and the Kafka clients (listeners' producers, routers'
	// consumers, receipt logs).
	{"github.com/quic-go/quic-go", "relay/quic"},
	{"github.com/twmb/franz-go/pkg/kgo.", "relay/kafka-client"},
	{"github.com/ccgpmesh/ccgp/bench.", partHarness},
	{"runtime.gcBgMarkWorker", partGC},
	{"runtime.bgsweep", partGC},
	{"runtime.bgscavenge", partGC},
}

func partOf(s *profile.Sample) string {
	if v := s.Label[labelKey]; len(v) > 0 {
		return v[0]
	}
	if len(s.Label["pebble"]) > 0 {
		// pebble's own background work (flushes, compactions) of every
		// store in the process: the chains' and the relays' delivery
		// records alike.
		return partPebble
	}
	for i := len(s.Location) - 1; i >= 0; i-- { // from the root
		ls := s.Location[i].Line
		for j := len(ls) - 1; j >= 0; j-- {
			if ls[j].Function == nil {
				continue
			}
			n := ls[j].Function.Name
			for _, r := range byRoot {
				if strings.HasPrefix(n, r.prefix) {
					return r.part
				}
			}
		}
	}
	return partOther
}

func verifying(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			n := l.Function.Name
			if strings.HasPrefix(n, "github.com/ccgpmesh/ccgp/crypto.") &&
				(strings.Contains(n, "Verify") || strings.Contains(n, "verify")) {
				return true
			}
		}
	}
	return false
}

// applyCPU fills the result's breakdown from the window's profile.
func (r *Result) applyCPU(prof []byte, packets uint64) error {
	if packets == 0 || len(prof) == 0 {
		return nil
	}
	parts, err := cpuBreakdown(prof)
	if err != nil {
		return err
	}
	var total, relay, relayVerify float64
	for _, cs := range parts {
		total += cs.cpu
		if cs.isRelay {
			relay += cs.cpu
			relayVerify += cs.verifyC
		}
	}
	if total == 0 {
		return nil
	}
	per := 1000 / float64(packets)
	for _, cs := range parts {
		cs.SPer1000 = math.Round(cs.cpu*per*1e4) / 1e4
		cs.Share = round3(cs.cpu / total)
		if cs.cpu > 0 && cs.verifyC > 0 {
			cs.VerifyShare = round3(cs.verifyC / cs.cpu)
		}
		r.CPUByPart = append(r.CPUByPart, *cs)
	}
	sort.Slice(r.CPUByPart, func(i, j int) bool { return r.CPUByPart[i].SPer1000 > r.CPUByPart[j].SPer1000 })
	if relay > 0 {
		r.RelayCPUSPer1000 = math.Round(relay*per*1e5) / 1e5
		r.VerifyShareOfRelayCPU = round3(relayVerify / relay)
	}
	return nil
}

// profileTo starts a CPU profile of the window into buf, and also into w
// if the caller asked for one (--cpuprofile).
func profileTo(buf *bytes.Buffer, w io.Writer) error {
	var out io.Writer = buf
	if w != nil {
		out = io.MultiWriter(buf, w)
	}
	return pprof.StartCPUProfile(out)
}
