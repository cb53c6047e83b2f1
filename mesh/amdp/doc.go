// Package amdp is the Authorized Multi-stage Distributed Protocol: the
// messages that ccgp relays exchange, their canonical signing bytes, their
// validation and size limits, and their wire framing. It does no I/O: the
// mesh package moves its frames over QUIC, the router builds its batches.
//
// # Stages
//
// Stage 1, [Packet]: one cross-chain request from a source app, signed by
// the app's key ([SignPacket]). The credential names the signer (address
// and suite) but does not carry the public key: the router looks the key up
// from the pipe record on govchain and checks it with [VerifyPacket].
// Sequences are per pipe, gap-free, and start at 1; [PacketID] is the hash
// of the pipe id and sequence, so a retried packet keeps its id.
//
// Stage 2, [Batch]: packets for one destination relay under one relay
// signature over the header, which commits to the packets' ids by a Merkle
// root ([SealBatch], [VerifyBatch]). The root covers ids, not contents;
// each packet's contents are covered by its own app signature.
//
// Receipts: the destination relay reports each packet's outcome in a
// [Receipt] and returns them in a [ReceiptBatch] that acknowledges one
// batch by its sequence; its root covers each receipt's full canonical
// bytes ([ReceiptLeaf]), so the verifier can prove one receipt against the
// anchored root with [MerkleProof] and [VerifyMerkleProof].
//
// # Signing bytes
//
// Signatures never cover protobuf output, which is not canonical across
// implementations. Each signed thing has an explicit encoding instead, in
// which u32 and u64 are fixed-width big-endian, an enum is its number as a
// u32, and str(x) and bytes(x) are a u32 length followed by the bytes.
// Every field is present, in this order, after a tag that separates the
// domains (each tag ends in NUL, so none is a prefix of another):
//
//	packet (signed by the app):
//	  "ccgp/amdp/v1/packet\x00" str(pipe_id) u64(sequence) u32(operation)
//	  bytes(payload) u64(timeout_height) u64(timeout_unix_ms)
//	  bytes(credential.signer) str(credential.suite)
//	batch header (signed by the sending relay):
//	  "ccgp/amdp/v1/batch-header\x00" str(from_relay) str(to_relay)
//	  u64(batch_seq) u32(packet_count) bytes(merkle_root) u64(created_unix_ms)
//	receipt (hashed into a Merkle leaf, not signed alone):
//	  "ccgp/amdp/v1/receipt\x00" bytes(packet_id) u32(status)
//	  bytes(dest_tx_hash) u64(dest_height) bytes(result_hash) str(reason)
//	receipt batch header (signed by the receiving relay):
//	  "ccgp/amdp/v1/receipt-batch-header\x00" str(from_relay) str(to_relay)
//	  u64(batch_seq) u32(receipt_count) bytes(merkle_root)
//	packet id:
//	  SHA-256("ccgp/amdp/v1/packet-id\x00" str(pipe_id) u64(sequence))
//
// The Merkle trees are RFC 6962's: leaf SHA-256(0x00 || leaf), node
// SHA-256(0x01 || left || right), a level's odd last node promoted, and the
// empty tree SHA-256(""). A batch's leaves are its packet ids; a receipt
// batch's are SHA-256 of each receipt's canonical bytes.
//
// # Frames
//
// On the wire each batch or receipt batch travels as one frame:
//
//	kind   1 byte   1 = batch, 2 = receipt batch
//	flags  1 byte   bit 0: body is one zstd frame; other bits must be 0
//	length uvarint  body length in bytes, 1 .. Limits.MaxBatchBytes
//	body   length bytes: the protobuf encoding (amdp.proto), or its zstd
//	       compression when flag bit 0 is set
//
// [EncodeFrame] compresses unless the batch does not shrink. A stream
// reader parses the header with [ParseFrameHeader] (at most
// [MaxFrameHeaderLen] bytes), reads the body, and decodes it with
// [DecodeFrameBody]; a reader with a buffer uses [DecodeFrame].
//
// # Limits
//
// Every decoder bounds its input before allocating for it: [DecodeBatch]
// refuses input over MaxBatchBytes, and counts the packets in the encoding
// before protobuf allocates them; a compressed frame body must be one zstd
// frame whose stated content size, or failing that whose block headers,
// bound it to MaxDecompressed before it is decompressed. Decoded messages
// are validated against [Limits] (payload, packet count, field lengths) and
// rejections are typed: each wraps one sentinel from errors.go, usually in
// a [*ValidationError] naming the field, and [Reason] gives the sentinel's
// stable label for metrics.
package amdp
