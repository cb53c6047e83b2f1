// Package router turns the cross-chain requests in Kafka into signed AMDP
// batches for the destination relays.
//
// A Shard is one member of a Kafka consumer group over its relay's events
// topic; shards scale out by joining the group. For every record a shard
// resolves the packet's pipe from the governance view, checks stage 1 (the
// app's signature against the key the pipe records, the pipe's status and
// source relay, the per-pipe sequence, the payload limit), groups accepted
// packets per destination relay into batches bounded by count and bytes,
// signs each batch header once (stage 2), hands it to the mesh, records the
// signed receipts, and only then commits the Kafka offsets. A crash or a
// rebalance therefore re-sends at most the uncommitted records, and the
// destination's idempotent delivery applies each packet once.
//
// The checks and the batching are deterministic cores without I/O (check.go,
// batch.go); shard.go does the I/O around them.
package router
