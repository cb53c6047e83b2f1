package amdp

import (
	"crypto/sha256"
	"fmt"
)

// The Merkle tree is RFC 6962's (section 2.1): a leaf hashes as
// SHA-256(0x00 || leaf), an inner node as SHA-256(0x01 || left || right),
// and the empty tree as SHA-256(""). Built bottom-up, a level's odd last
// node is promoted unchanged, which gives the same root as RFC 6962's
// split at the largest power of two. The prefixes keep a leaf from ever
// passing for an inner node.

func leafHash(leaf [32]byte) [32]byte {
	var b [1 + 32]byte
	b[0] = 0x00
	copy(b[1:], leaf[:])
	return sha256.Sum256(b[:])
}

func nodeHash(l, r [32]byte) [32]byte {
	var b [1 + 64]byte
	b[0] = 0x01
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// MerkleRoot returns the root of the tree over leaves.
func MerkleRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leafHash(leaves[0])
	}
	// One scratch level, overwritten in place: level[i/2] is written only
	// after level[i] and level[i+1] have been read.
	level := make([][32]byte, (len(leaves)+1)/2)
	for i := 0; i < len(leaves); i += 2 {
		if i+1 < len(leaves) {
			level[i/2] = nodeHash(leafHash(leaves[i]), leafHash(leaves[i+1]))
		} else {
			level[i/2] = leafHash(leaves[i])
		}
	}
	return reduce(level)
}

// reduce hashes a level of node hashes up to the root, in place.
func reduce(level [][32]byte) [32]byte {
	n := len(level)
	for n > 1 {
		for i := 0; i < n; i += 2 {
			if i+1 < n {
				level[i/2] = nodeHash(level[i], level[i+1])
			} else {
				level[i/2] = level[i]
			}
		}
		n = (n + 1) / 2
	}
	return level[0]
}

// MerkleProof returns the audit path of leaves[index]: the sibling hashes
// from the leaf's level up, skipping the levels at which the node was
// promoted. VerifyMerkleProof checks it.
func MerkleProof(leaves [][32]byte, index int) ([][32]byte, error) {
	if index < 0 || index >= len(leaves) {
		return nil, fmt.Errorf("amdp: merkle proof: index %d out of range for %d leaves", index, len(leaves))
	}
	level := make([][32]byte, len(leaves))
	for i := range leaves {
		level[i] = leafHash(leaves[i])
	}
	var proof [][32]byte
	for n := len(level); n > 1; n = (n + 1) / 2 {
		switch {
		case index%2 == 1:
			proof = append(proof, level[index-1])
		case index+1 < n:
			proof = append(proof, level[index+1])
		}
		for i := 0; i < n; i += 2 {
			if i+1 < n {
				level[i/2] = nodeHash(level[i], level[i+1])
			} else {
				level[i/2] = level[i]
			}
		}
		index /= 2
	}
	return proof, nil
}

// VerifyMerkleProof reports whether proof shows that leaf is leaf number
// index of a tree of count leaves with the given root. It is RFC 9162's
// inclusion-proof verification (section 2.1.3.2).
func VerifyMerkleProof(root, leaf [32]byte, index, count uint64, proof [][32]byte) bool {
	if index >= count {
		return false
	}
	fn, sn := index, count-1
	r := leafHash(leaf)
	for _, p := range proof {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			// Skip the levels at which this node had no sibling.
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && r == root
}
