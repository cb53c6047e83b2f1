package bench

import (
	"bufio"
	"bytes"
	"math"
	"math/bits"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Histogram records durations in log-linear buckets: 64 sub-buckets per
// power of two of microseconds, so a quantile is within 1.6% of the true
// value, from 1 µs to 2^40 µs, in fixed memory. Record is lock-free and
// safe for concurrent use.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64 // µs
}

const (
	histSub     = 64 // sub-buckets per power of two
	histSubBits = 6
	histBuckets = (41 - histSubBits + 1) * histSub
)

// bucket maps v µs to its bucket: exact below 64 µs, then 64 per octave.
func bucket(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // shift that leaves 6 significant bits after the leading one
	i := (e+1)*histSub + int(v>>uint(e)) - histSub
	return min(i, histBuckets-1)
}

// bucketValue is the midpoint (µs) of bucket i.
func bucketValue(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := i/histSub - 1
	lo := uint64(i%histSub+histSub) << uint(e)
	return float64(lo) + float64(uint64(1)<<uint(e))/2
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.counts[bucket(uint64(us))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// Reset forgets everything recorded (not atomically with respect to
// concurrent Records: those may land on either side).
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.max.Store(0)
}

// Quantile returns the q-quantile in milliseconds, or NaN when nothing
// was recorded. q=1 is the maximum.
func (h *Histogram) Quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return math.NaN()
	}
	if q >= 1 {
		return float64(h.max.Load()) / 1000
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return math.Min(bucketValue(i), float64(h.max.Load())) / 1000
		}
	}
	return float64(h.max.Load()) / 1000
}

// procSample is what the process has used so far: CPU time, heap
// allocations, resident memory.
type procSample struct {
	at        time.Time
	cpu       time.Duration // user + system
	allocs    uint64        // heap objects allocated, cumulative
	allocB    uint64        // heap bytes allocated, cumulative
	rssBytes  uint64        // VmRSS
	heapBytes uint64        // live heap objects' bytes
}

// sampleProc reads the process's counters: getrusage for CPU (all
// threads), runtime/metrics for allocations (no stop-the-world), and
// /proc/self/status for the resident set.
func sampleProc() procSample {
	s := procSample{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	ms := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(ms)
	s.allocs, s.allocB, s.heapBytes = ms[0].Value.Uint64(), ms[1].Value.Uint64(), ms[2].Value.Uint64()
	s.rssBytes = readRSS()
	return s
}

// readRSS returns VmRSS from /proc/self/status in bytes (0 where there is
// no /proc).
func readRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("VmRSS:")) {
			continue
		}
		fields := bytes.Fields(line[len("VmRSS:"):])
		if len(fields) == 0 {
			return 0
		}
		kb, err := strconv.ParseUint(string(fields[0]), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}

// GOMAXPROCS is the GOMAXPROCS every figure of a run is measured on.
func GOMAXPROCS() int { return runtime.GOMAXPROCS(0) }

// mb converts bytes to MiB, rounded to 0.1.
func mb(b uint64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
