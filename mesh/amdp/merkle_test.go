package amdp

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// refRoot and refPath are RFC 6962 section 2.1 as written: split at the
// largest power of two below n, recursively.
func refRoot(d [][32]byte) [32]byte {
	switch len(d) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leafHash(d[0])
	}
	k := splitPoint(len(d))
	return nodeHash(refRoot(d[:k]), refRoot(d[k:]))
}

func refPath(m int, d [][32]byte) [][32]byte {
	if len(d) <= 1 {
		return nil
	}
	k := splitPoint(len(d))
	if m < k {
		return append(refPath(m, d[:k]), refRoot(d[k:]))
	}
	return append(refPath(m-k, d[k:]), refRoot(d[:k]))
}

func splitPoint(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}

func testLeaves(n int) [][32]byte {
	leaves := make([][32]byte, n)
	for i := range leaves {
		leaves[i] = PacketID("merkle", uint64(i+1))
	}
	return leaves
}

func TestMerkleRootMatchesRFC6962(t *testing.T) {
	for n := 0; n <= 70; n++ {
		leaves := testLeaves(n)
		if got, want := MerkleRoot(leaves), refRoot(leaves); got != want {
			t.Fatalf("n=%d: root %x, RFC 6962 gives %x", n, got, want)
		}
		if got, want := rootInPlace(testLeaves(n)), refRoot(leaves); got != want {
			t.Fatalf("n=%d: rootInPlace %x, want %x", n, got, want)
		}
	}
	if got := MerkleRoot(nil); hex.EncodeToString(got[:]) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("empty root %x is not SHA-256 of nothing", got)
	}
}

func TestMerkleRootDoesNotModifyLeaves(t *testing.T) {
	leaves := testLeaves(9)
	MerkleRoot(leaves)
	if want := testLeaves(9); [9][32]byte(leaves) != [9][32]byte(want) {
		t.Fatal("MerkleRoot changed its input")
	}
}

func TestMerkleProofs(t *testing.T) {
	for n := 1; n <= 33; n++ {
		leaves := testLeaves(n)
		root := MerkleRoot(leaves)
		for i := range n {
			proof, err := MerkleProof(leaves, i)
			if err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			want := refPath(i, leaves)
			if len(proof) != len(want) {
				t.Fatalf("n=%d i=%d: proof has %d hashes, RFC 6962 path has %d", n, i, len(proof), len(want))
			}
			for j := range want {
				if proof[j] != want[j] {
					t.Fatalf("n=%d i=%d: proof[%d] differs from the RFC 6962 path", n, i, j)
				}
			}
			idx, cnt := uint64(i), uint64(n)
			if !VerifyMerkleProof(root, leaves[i], idx, cnt, proof) {
				t.Fatalf("n=%d i=%d: valid proof rejected", n, i)
			}
			// Every way of lying must fail.
			other := PacketID("other", 1)
			if VerifyMerkleProof(root, other, idx, cnt, proof) {
				t.Fatalf("n=%d i=%d: proof accepted for another leaf", n, i)
			}
			if VerifyMerkleProof(other, leaves[i], idx, cnt, proof) {
				t.Fatalf("n=%d i=%d: proof accepted for another root", n, i)
			}
			if n > 1 && VerifyMerkleProof(root, leaves[i], (idx+1)%cnt, cnt, proof) {
				t.Fatalf("n=%d i=%d: proof accepted at another index", n, i)
			}
			// No check against a larger count: an RFC 6962 root does not
			// commit to its leaf count (for n=3, index 0 verifies as if
			// n=4), which is why headers and anchors sign the count too.
			if VerifyMerkleProof(root, leaves[i], cnt, cnt, proof) {
				t.Fatalf("n=%d i=%d: index == count accepted", n, i)
			}
			if len(proof) > 0 {
				bad := append([][32]byte(nil), proof...)
				bad[len(bad)-1][0] ^= 1
				if VerifyMerkleProof(root, leaves[i], idx, cnt, bad) {
					t.Fatalf("n=%d i=%d: tampered proof accepted", n, i)
				}
				if VerifyMerkleProof(root, leaves[i], idx, cnt, proof[:len(proof)-1]) {
					t.Fatalf("n=%d i=%d: short proof accepted", n, i)
				}
			}
			if VerifyMerkleProof(root, leaves[i], idx, cnt, append(proof, other)) {
				t.Fatalf("n=%d i=%d: long proof accepted", n, i)
			}
		}
	}
}

func TestMerkleProofIndexOutOfRange(t *testing.T) {
	for _, c := range []struct{ n, i int }{{0, 0}, {3, 3}, {3, -1}} {
		if _, err := MerkleProof(testLeaves(c.n), c.i); err == nil {
			t.Errorf("MerkleProof(%d leaves, %d) did not fail", c.n, c.i)
		}
	}
}

// A leaf must never pass for an inner node: the two-leaf tree's root is not
// the one-leaf tree over that root.
func TestMerkleDomainSeparation(t *testing.T) {
	leaves := testLeaves(2)
	root := MerkleRoot(leaves)
	if MerkleRoot([][32]byte{root}) == root {
		t.Fatal("leaf and node hashes are not separated")
	}
	if VerifyMerkleProof(root, nodeHash(leafHash(leaves[0]), leafHash(leaves[1])), 0, 1, nil) {
		t.Fatal("inner node accepted as a leaf")
	}
}
