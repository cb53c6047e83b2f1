package crypto

import (
	"crypto/ed25519"
	"fmt"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Batch verification of Ed25519 signatures.
//
// A relay verifies every packet's stage-1 signature: that is its physical
// limit. Checking many signatures together (one multi-scalar multiplication
// instead of one double-scalar multiplication each) is about twice as fast
// per signature, and keys expanded once (≈1.5 KiB each) save their
// decompression on every use. Batch verification is cofactored, so it
// follows ZIP-215, as CometBFT does: every signature that crypto/ed25519
// accepts is accepted; only crafted small-order or non-canonical inputs,
// which no honest signer produces, may be accepted here and refused there.
// A batch with a bad signature falls back to checking each one, so the
// verdicts are per signature either way.

// MaxBatch is the most signatures checked as one batch; larger inputs are
// split. Beyond a few hundred the multi-scalar multiplication gains little
// per signature while the scratch space keeps growing.
const MaxBatch = 512

// zip215 is the verification rule of every batch and of the single
// checks it falls back to.
var zip215 = &voi.Options{Verify: voi.VerifyOptionsZIP_215}

// SigItem is one signature to check: Signature over Message by PublicKey
// under Suite. The slices are read, never kept.
type SigItem struct {
	Suite     Suite
	PublicKey []byte
	Message   []byte
	Signature []byte
}

// KeyCache keeps Ed25519 public keys in expanded form for batch
// verification, so that a long-lived verifier (a relay's pipe keys)
// expands each key once. It is safe for concurrent use and holds at most
// its size in keys: when full, it starts over.
type KeyCache struct {
	max int

	mu   sync.RWMutex // guards keys
	keys map[string]*voi.ExpandedPublicKey
}

// NewKeyCache returns a cache of at most size keys (at least 1).
func NewKeyCache(size int) *KeyCache {
	return &KeyCache{max: max(size, 1), keys: make(map[string]*voi.ExpandedPublicKey)}
}

// expand returns pub's expanded form, from the cache when it is there.
func (c *KeyCache) expand(pub []byte) (*voi.ExpandedPublicKey, error) {
	c.mu.RLock()
	k, ok := c.keys[string(pub)]
	c.mu.RUnlock()
	if ok {
		return k, nil
	}
	k, err := expandKey(pub)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.keys) >= c.max {
		clear(c.keys)
	}
	c.keys[string(pub)] = k
	c.mu.Unlock()
	return k, nil
}

func expandKey(pub []byte) (*voi.ExpandedPublicKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: ed25519 public key is %d bytes", ErrBadKey, len(pub))
	}
	k, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return k, nil
}

// BatchVerifier checks sets of signatures, Ed25519 ones as batches. It
// keeps its scratch space between calls; it is not safe for concurrent
// use (use one per goroutine, or VerifyBatch).
type BatchVerifier struct {
	keys *KeyCache                         // shared; nil: memo only
	memo map[string]*voi.ExpandedPublicKey // keys expanded by this verifier when keys is nil
	bv   *voi.BatchVerifier
	pos  []int // item index of each batch entry
}

// NewBatchVerifier returns a verifier that takes expanded keys from keys,
// or, when keys is nil, expands each distinct key once per verifier.
func NewBatchVerifier(keys *KeyCache) *BatchVerifier {
	return &BatchVerifier{keys: keys, bv: voi.NewBatchVerifierWithCapacity(MaxBatch)}
}

func (v *BatchVerifier) expand(pub []byte) (*voi.ExpandedPublicKey, error) {
	if v.keys != nil {
		return v.keys.expand(pub)
	}
	if k, ok := v.memo[string(pub)]; ok {
		return k, nil
	}
	k, err := expandKey(pub)
	if err != nil {
		return nil, err
	}
	if v.memo == nil {
		v.memo = make(map[string]*voi.ExpandedPublicKey)
	}
	v.memo[string(pub)] = k
	return k, nil
}

// Verify checks every item and sets errs[i] (len(errs) ≥ len(items)) to
// nil when items[i] verifies, or to an error wrapping ErrBadSignature,
// ErrBadKey or ErrUnknownSuite. It reports whether all verified. Ed25519
// items are checked in batches of up to MaxBatch; other suites one by one.
func (v *BatchVerifier) Verify(items []SigItem, errs []error) bool {
	errs = errs[:len(items)]
	all := true
	v.bv.Reset()
	v.pos = v.pos[:0]
	flush := func() {
		if len(v.pos) == 0 {
			return
		}
		ok, valid := v.bv.Verify(nil)
		if !ok {
			for j, i := range v.pos {
				if !valid[j] {
					errs[i] = ErrBadSignature
					all = false
				}
			}
		}
		v.bv.Reset()
		v.pos = v.pos[:0]
	}
	for i := range items {
		it := &items[i]
		errs[i] = nil
		if it.Suite != SuiteEd25519 {
			if errs[i] = Verify(it.Suite, it.PublicKey, it.Message, it.Signature); errs[i] != nil {
				all = false
			}
			continue
		}
		if len(it.Signature) != ed25519.SignatureSize {
			errs[i] = fmt.Errorf("%w: ed25519 signature is %d bytes", ErrBadSignature, len(it.Signature))
			all = false
			continue
		}
		k, err := v.expand(it.PublicKey)
		if err != nil {
			errs[i] = err
			all = false
			continue
		}
		v.bv.AddExpandedWithOptions(k, it.Message, it.Signature, zip215)
		v.pos = append(v.pos, i)
		if len(v.pos) == MaxBatch {
			flush()
		}
	}
	flush()
	return all
}

// minPerWorker is the smallest share of items worth its own goroutine.
const minPerWorker = 64

// scratch recycles batch verifiers between VerifyBatch calls: each holds
// ≈0.6 KiB of curve points per entry, which a relay would otherwise
// allocate afresh for every batch it checks. It holds no keys.
var scratch = sync.Pool{New: func() any { return NewBatchVerifier(nil) }}

// verifyWith checks items with a pooled verifier drawing keys from keys,
// or expanding them afresh (memoised per call) when keys is nil.
func verifyWith(items []SigItem, errs []error, keys *KeyCache) bool {
	v := scratch.Get().(*BatchVerifier)
	v.keys = keys
	ok := v.Verify(items, errs)
	v.keys = nil
	clear(v.memo)
	scratch.Put(v)
	return ok
}

// VerifyBatch is BatchVerifier.Verify spread over up to workers
// goroutines, each checking a contiguous share as its own batches. keys
// may be nil (see NewBatchVerifier). It returns when every item has its
// verdict.
func VerifyBatch(items []SigItem, errs []error, workers int, keys *KeyCache) bool {
	workers = min(workers, (len(items)+minPerWorker-1)/minPerWorker)
	if workers <= 1 {
		return verifyWith(items, errs, keys)
	}
	chunk := (len(items) + workers - 1) / workers
	var wg sync.WaitGroup
	oks := make([]bool, workers)
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(items))
		if lo >= hi {
			oks[w] = true
			continue
		}
		wg.Go(func() { oks[w] = verifyWith(items[lo:hi], errs[lo:hi], keys) })
	}
	wg.Wait()
	for _, ok := range oks {
		if !ok {
			return false
		}
	}
	return true
}
