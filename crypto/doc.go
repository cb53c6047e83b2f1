// Package crypto holds ccgp's signing suites, account addresses and the
// on-disk keystore.
//
// Every signature in ccgp goes through the small Signer and Verifier
// interfaces so that more suites (ECDSA P-384, ML-DSA-65, a hybrid) can be
// added without touching their callers. Ed25519 is the default suite.
//
// Addresses are the first 20 bytes of SHA-256(suite tag || 0x00 || public
// key), so the same key bytes under two suites never collide.
//
// This package must not depend on any other ccgp package.
package crypto
