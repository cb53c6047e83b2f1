package crypto

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/quick"
)

// sigItems signs n distinct messages of size bytes with keys keys, round
// robin, through the package's stdlib-backed Signer.
func sigItems(t testing.TB, n, keys, size int) []SigItem {
	t.Helper()
	signers := make([]*Ed25519Signer, keys)
	for i := range signers {
		signers[i] = DevSigner(fmt.Sprint("batch-", i))
	}
	items := make([]SigItem, n)
	for i := range items {
		s := signers[i%keys]
		msg := make([]byte, size)
		for j := range msg {
			msg[j] = byte(i*7 + j)
		}
		sig, err := s.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = SigItem{Suite: s.Suite(), PublicKey: s.PublicKey(), Message: msg, Signature: sig}
	}
	return items
}

func TestBatchVerifyValid(t *testing.T) {
	for _, n := range []int{1, 2, 63, MaxBatch, MaxBatch + 1, 3*MaxBatch + 5} {
		items := sigItems(t, n, 3, 100)
		errs := make([]error, n)
		for _, keys := range []*KeyCache{nil, NewKeyCache(16)} {
			if !NewBatchVerifier(keys).Verify(items, errs) {
				t.Fatalf("n=%d: valid signatures refused: %v", n, errors.Join(errs...))
			}
			if !VerifyBatch(items, errs, 4, keys) {
				t.Fatalf("n=%d parallel: valid signatures refused: %v", n, errors.Join(errs...))
			}
		}
	}
}

// TestBatchVerifyFindsEachBad flips one bit in chosen signatures, messages
// and keys and checks that exactly those items fail, with the right
// sentinel, in batches of every shape.
func TestBatchVerifyFindsEachBad(t *testing.T) {
	items := sigItems(t, 2*MaxBatch+10, 4, 64)
	bad := map[int]error{0: ErrBadSignature, 7: ErrBadSignature, MaxBatch: ErrBadSignature, len(items) - 1: ErrBadSignature,
		100: ErrBadKey, 300: ErrBadSignature, 301: ErrUnknownSuite}
	items[0].Signature = flip(items[0].Signature, 3)
	items[7].Message = flip(items[7].Message, 10)
	items[MaxBatch].Signature = flip(items[MaxBatch].Signature, 40)
	items[len(items)-1].Signature = flip(items[len(items)-1].Signature, 63)
	items[100].PublicKey = items[100].PublicKey[:31]
	items[300].Signature = items[300].Signature[:63]
	items[301].Suite = "rot13"
	errs := make([]error, len(items))
	for _, workers := range []int{1, 3} {
		if VerifyBatch(items, errs, workers, NewKeyCache(8)) {
			t.Fatal("a batch with bad signatures verified")
		}
		for i, err := range errs {
			want, isBad := bad[i]
			switch {
			case isBad && !errors.Is(err, want):
				t.Errorf("workers %d item %d: got %v, want %v", workers, i, err, want)
			case !isBad && err != nil:
				t.Errorf("workers %d item %d: valid item failed: %v", workers, i, err)
			}
		}
	}
}

// TestBatchVerifyMatchesStdlib compares batch verdicts with crypto.Verify
// (crypto/ed25519) on random corruptions of honest signatures: they must
// agree, since ZIP-215 differs only on crafted small-order inputs.
func TestBatchVerifyMatchesStdlib(t *testing.T) {
	base := sigItems(t, 64, 2, 48)
	f := func(seed uint64) bool {
		r := rand.New(rand.NewPCG(seed, 1))
		items := append([]SigItem(nil), base...)
		for k := r.IntN(4); k > 0; k-- {
			i := r.IntN(len(items))
			switch r.IntN(3) {
			case 0:
				items[i].Signature = flip(items[i].Signature, r.IntN(64))
			case 1:
				items[i].Message = flip(items[i].Message, r.IntN(48))
			default:
				items[i].PublicKey = flip(items[i].PublicKey, r.IntN(32))
			}
		}
		errs := make([]error, len(items))
		NewBatchVerifier(nil).Verify(items, errs)
		for i, it := range items {
			want := Verify(it.Suite, it.PublicKey, it.Message, it.Signature)
			if (want == nil) != (errs[i] == nil) {
				t.Logf("item %d: stdlib %v, batch %v", i, want, errs[i])
				return false
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
}

func TestKeyCacheBounded(t *testing.T) {
	c := NewKeyCache(2)
	for i := range 5 {
		if _, err := c.expand(DevSigner(fmt.Sprint("k", i)).PublicKey()); err != nil {
			t.Fatal(err)
		}
		if n := len(c.keys); n > 2 {
			t.Fatalf("cache holds %d keys, bound 2", n)
		}
	}
}

func flip(b []byte, bit int) []byte {
	out := append([]byte(nil), b...)
	out[bit%len(out)] ^= 1 << (bit % 8)
	return out
}

// BenchmarkVerify compares, per signature over a 350-byte message (a
// packet's signing bytes): crypto/ed25519 one at a time, and batches of
// several sizes with expanded keys cached. One goroutine.
func BenchmarkVerify(b *testing.B) {
	b.Run("stdlib", func(b *testing.B) {
		items := sigItems(b, 1024, 4, 350)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			it := &items[i%len(items)]
			if err := Verify(it.Suite, it.PublicKey, it.Message, it.Signature); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
	})
	for _, n := range []int{64, 128, 256, 512} {
		b.Run(fmt.Sprint("batch-", n), func(b *testing.B) {
			items := sigItems(b, n, 4, 350)
			errs := make([]error, n)
			v := NewBatchVerifier(NewKeyCache(16))
			b.ReportAllocs()
			for b.Loop() {
				if !v.Verify(items, errs) {
					b.Fatal(errors.Join(errs...))
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "sig/s")
		})
	}
}

// BenchmarkVerifyParallel is the relay's case: 4096 signatures (one router
// cycle) spread over GOMAXPROCS goroutines, keys cached or not.
func BenchmarkVerifyParallel(b *testing.B) {
	items := sigItems(b, 4096, 4, 350)
	errs := make([]error, len(items))
	for _, cached := range []bool{false, true} {
		b.Run(map[bool]string{false: "memo", true: "cached"}[cached], func(b *testing.B) {
			var keys *KeyCache
			if cached {
				keys = NewKeyCache(16)
			}
			b.ReportAllocs()
			for b.Loop() {
				if !VerifyBatch(items, errs, runtime.GOMAXPROCS(0), keys) {
					b.Fatal(errors.Join(errs...))
				}
			}
			b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "sig/s")
		})
	}
}

// BenchmarkSign is the sign side of a packet (the app) and of a batch (the
// relay, once per batch).
func BenchmarkSign(b *testing.B) {
	s := DevSigner("bench-sign")
	msg := make([]byte, 350)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
}
