// Package ingest brings cross-chain requests from subchains into Kafka and
// hands packets to subchains on the destination side.
//
// A subchain type is a plugin that implements Chain. A Listener follows one
// chain's finalized blocks from its last checkpointed height, produces
// every cross-chain request to Kafka (topic ccgp.events, key = pipe id so
// that one pipe keeps its order) with franz-go's idempotent producer, and
// checkpoints a height only after Kafka acknowledged every record of it:
// a crash re-produces at most the blocks after the checkpoint, and the
// router drops the duplicates by sequence.
//
// Built-in plugins live beside it: ingest/simchain, a simulated chain that
// behaves like one (blocks, heights, finality, restarts).
package ingest
