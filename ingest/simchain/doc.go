// Package simchain is a simulated subchain that behaves like a real one: it
// produces blocks at an interval in its own goroutine (empty ones too, so
// heights advance), chains them by hash, makes them final at a depth, and
// keeps everything on disk in pebble so that a restart continues from the
// stored head. It implements subchain.Chain.
//
// # Source side
//
// An app submits a signed AMDP packet as a tx with Submit (App does the
// signing and sequencing). The chain's cross-chain contract checks the
// packet's structure and that its sequence is the pipe's next one, counting
// txs still in the mempool, so that every pipe's requests are gap-free from
// 1. It does not check the signature: the router does, against the key the
// pipe records on govchain. Each accepted request becomes an subchain.Event
// in the block that includes it; Blocks streams final blocks to listeners.
//
// # Destination side
//
// Deliver executes packets as txs and returns once their block is
// committed. The destination contract accepts a packet (result hash =
// SHA-256 over a domain tag, the packet id and the payload) or, when its
// payload starts with Options.RejectPrefix, rejects it deterministically
// with a reason. The chain does not deduplicate: a packet id executed twice
// is recorded twice (DeliveryRecord.Count), because exactly-once delivery
// is the relay's job and the demo measures it from these records. Rollback
// records the undoing of a source request after its destination refused
// it.
//
// # Storage
//
// One pebble database per chain, written once per block in one synced
// batch: the block, the head, the pipes' committed sequences, the delivery
// and rollback records it changes, and the counters behind Stats. Old
// blocks are read back from pebble, never kept in memory. Txs still in the
// mempool when Close is called are committed in last blocks before it
// returns, so an accepted tx is never lost by a clean shutdown; a crash
// loses them, as it would a real node's mempool.
//
// Keys (u64 big-endian, so heights sort):
//
//	m/id                      the chain id, checked when the directory is reopened
//	m/head                    head height, head hash, last committed tx nonce, counters
//	b/<u64 height>            block: hashes and txs
//	s/<pipe id>               last committed source sequence of the pipe
//	d/<packet id>             delivery record
//	r/<u32 len><pipe><u64 seq> rollback record
//	q/<u32 len><pipe><u64 seq> request: height, tx hash, packet id
//	x/<u32 len><pipe><u64 seq> copy of the delivery record of the packet (pipe, seq)
//	m/indexed                 set once q/ and x/ are complete
//
// q/ and x/ serve Records (subchain.Records): a pipe's requests, rollbacks
// and executions over a sequence range, each one range iteration. A store
// written before they existed is indexed from its blocks when opened.
package simchain
