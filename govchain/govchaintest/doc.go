// Package govchaintest holds test harnesses for code that reads the
// governance chain: a CometBFT RPC client that tampers with a real node's
// answers, for hostile-node tests.
package govchaintest
