// Package govchain is the governance chain: the CometBFT ABCI application
// that holds the consortium (orgs admitted by vote, accounts and roles,
// relay services, subchains, apps, contracts, pipes), the cross-chain
// transaction records (batch anchors, receipt anchors, exceptions and
// resolutions) and their sanctions. It also holds the node that runs the
// application, and the client that reads and writes it.
//
// The files split the way the chain is used:
//   - app.go, exec.go, consortium.go, txcontrol.go: the deterministic state
//     machine. Every tx is checked (signature, nonce, role, bounds) before
//     it changes anything, and a block's result is a pure function of the
//     state and its txs, so every validator and audit node agrees on the
//     app hash.
//   - tx.go: building and signing txs.
//   - node.go, testnet.go: an in-process CometBFT node and a local testnet.
//   - client.go, query.go, trust.go: reads anchored to a trust root the
//     operator configures. The root is the genesis file, or a trusted
//     height and hash. Headers are verified with CometBFT's light package
//     and values with IAVL proofs against the verified app hash, so a
//     lying node can refuse to answer but cannot be believed.
//   - cache.go: the relays' proven view of what the mesh trusts (pipes,
//     relay accounts, services, org statuses), refreshed from the change
//     log.
package govchain
