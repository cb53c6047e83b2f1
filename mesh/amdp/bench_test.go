package amdp

import (
	"fmt"
	"testing"
)

// Benchmarks use 256-byte JSON-like payloads, about what a contract call
// carries.

func BenchmarkPacketEncode(b *testing.B) {
	p := signedPacket(b, "pipe-a", 1, payloadFor(1, 256))
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = EncodePacket(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkPacketDecode(b *testing.B) {
	enc, _ := EncodePacket(nil, signedPacket(b, "pipe-a", 1, payloadFor(1, 256)))
	l := DefaultLimits()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePacket(enc, l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPacketVerify(b *testing.B) {
	p := signedPacket(b, "pipe-a", 1, payloadFor(1, 256))
	pub := appKey.PublicKey()
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyPacket(p, appKey.Suite(), pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBatchSeal(b *testing.B) {
	for _, n := range []int{64, 512} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bt := sealedBatch(b, n, 256)
			b.ReportAllocs()
			for b.Loop() {
				if err := SealBatch(bt, relayA); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBatchVerify(b *testing.B) {
	l := DefaultLimits()
	for _, n := range []int{64, 512} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bt := sealedBatch(b, n, 256)
			b.ReportAllocs()
			for b.Loop() {
				if err := VerifyBatch(bt, relayA.Suite(), relayA.PublicKey(), l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMerkleRoot(b *testing.B) {
	leaves := testLeaves(1024)
	b.ReportAllocs()
	for b.Loop() {
		MerkleRoot(leaves)
	}
}

// BenchmarkFrameZstd measures a 512-packet batch through the wire format:
// SetBytes is the protobuf size, so MB/s compare across sub-benchmarks.
func BenchmarkFrameZstd(b *testing.B) {
	l := DefaultLimits()
	enc, dec := codecs(b, l)
	bt := sealedBatch(b, 512, 256)
	raw, _ := EncodeBatch(nil, bt)
	for _, c := range []struct {
		name     string
		compress bool
	}{{"zstd", true}, {"plain", false}} {
		e := enc
		if !c.compress {
			e = nil
		}
		frame, _ := EncodeFrame(nil, bt, e)
		b.Run(c.name+"/encode", func(b *testing.B) {
			buf := make([]byte, 0, len(raw)+64)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = EncodeFrame(buf[:0], bt, e); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(frame)), "wire-bytes")
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeFrame(frame, dec, l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
