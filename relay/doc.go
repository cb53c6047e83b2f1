// Package relay assembles one organisation's relay: the subchain proxy (the
// chain plugin, its Kafka listener, delivery into the chain) and the
// cross-chain proxy (router shards, the QUIC mesh endpoint, the governance
// cache). It is the composition root that `ccgp relay start`, `ccgp demo`
// and `ccgp bench` share, so that none of them re-wires the parts
// differently; it holds no protocol logic of its own.
package relay
