package simchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/kv"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Key prefixes; see the package documentation for the layout.
var (
	keyID          = []byte("m/id")
	keyHead        = []byte("m/head")
	prefixBlock    = []byte("b/")
	prefixSeq      = []byte("s/")
	prefixDelivery = []byte("d/")
	prefixRollback = []byte("r/")
	// The range indexes behind Records (subchain.Records): a pipe's
	// requests and executions in sequence order. keyIndexed marks a store
	// whose indexes are complete; one written before they existed is
	// indexed from its blocks when it is opened.
	keyIndexed      = []byte("m/indexed")
	prefixRequest   = []byte("q/")
	prefixExecution = []byte("x/")
)

// recordVersion leads every stored value, so that a later layout can be
// told apart from this one.
const recordVersion = 1

// Domain tags of the chain's hashes; each ends in NUL so that none is a
// prefix of another.
const (
	tagTx     = "ccgp/simchain/v1/tx\x00"
	tagBlock  = "ccgp/simchain/v1/block\x00"
	tagResult = "ccgp/simchain/v1/result\x00"
)

type txKind uint8

const (
	txRequest  txKind = 1 // a source app's cross-chain request (body: the packet)
	txDeliver  txKind = 2 // a delivery of a packet from another chain (body: the packet)
	txRollback txKind = 3 // the undoing of a source request (body: pipe, seq, reason)
)

// cacheSize is pebble's block cache. The default 8 MiB is too small to
// keep the index and filter blocks of a busy chain: the delivery lookups
// at execution then read them from the file system again and again.
const cacheSize = 64 << 20

func openDB(dir string, log *slog.Logger) (*pebble.DB, error) {
	db, err := kv.Open(dir, kv.Options{Log: log, Hot: cacheSize})
	if isLocked(err) {
		return nil, fmt.Errorf("%w: %s (stop the relay that owns it): %w", ErrLocked, dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("simchain: open %s: %w", dir, err)
	}
	return db, nil
}

// isLocked reports pebble's refusal of a directory another process has
// open (flock: EWOULDBLOCK) or this one has (pebble's own check, an error
// with no sentinel: its text is all there is to tell it by).
func isLocked(err error) bool {
	return err != nil && (errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "lock held by current process"))
}

// get returns a copy of the value at key, or nil, false.
func get(db *pebble.DB, key []byte) ([]byte, bool, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("simchain: read %q: %w", key, err)
	}
	out := append([]byte(nil), v...)
	if err := closer.Close(); err != nil {
		return nil, false, fmt.Errorf("simchain: read %q: %w", key, err)
	}
	return out, true, nil
}

// seek returns a copy of the value at key through it, an iterator opened
// with UseL6Filters: unlike DB.Get, it asks the bottom level's bloom
// filters too, so a key that does not exist (a new packet) costs no block
// reads at any level.
func seek(it *pebble.Iterator, key []byte) ([]byte, bool, error) {
	if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
		if err := it.Error(); err != nil {
			return nil, false, fmt.Errorf("simchain: read %q: %w", key, err)
		}
		return nil, false, nil
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return nil, false, fmt.Errorf("simchain: read %q: %w", key, err)
	}
	return append([]byte(nil), v...), true, nil
}

// prefixEnd returns the smallest key above every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++ // the prefixes end in '/', never 0xff
	return end
}

// pipeSeqKey is prefix, u32 len, pipe, u64 seq: one pipe's keys are
// contiguous and in sequence order, so a sequence range is one iteration.
func pipeSeqKey(prefix []byte, pipe string, seq uint64) []byte {
	k := append(make([]byte, 0, len(prefix)+4+len(pipe)+8+32), prefix...)
	k = binary.BigEndian.AppendUint32(k, uint32(len(pipe)))
	k = append(k, pipe...)
	return binary.BigEndian.AppendUint64(k, seq)
}

func requestKey(pipe string, seq uint64) []byte { return pipeSeqKey(prefixRequest, pipe, seq) }

// executionKey needs no packet id: the id is a function of (pipe, seq)
// (amdp.PacketID).
func executionKey(pipe string, seq uint64) []byte { return pipeSeqKey(prefixExecution, pipe, seq) }

func blockKey(h uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixBlock...), h)
}
func seqKey(pipe string) []byte { return append(append([]byte(nil), prefixSeq...), pipe...) }

func deliveryKey(id [32]byte) []byte { return append(append([]byte(nil), prefixDelivery...), id[:]...) }

func rollbackKey(pipe string, seq uint64) []byte { return pipeSeqKey(prefixRollback, pipe, seq) }

// Encoding: u8, u32 and u64 are fixed-width big-endian; bytes(x) is a u32
// length and the bytes; [32] is 32 bytes as they are.

func appendBytes(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// decoder reads the encoding above; the first short read sets bad and
// every later read returns zero values, so callers check once at the end.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || n < 0 || len(d.b) < n {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) hash() (h [32]byte) {
	copy(h[:], d.take(32))
	return h
}

func (d *decoder) bytes() []byte { return d.take(int(d.u32())) }

// end reports whether the whole input decoded with nothing left over.
func (d *decoder) end(what string) error {
	if d.bad || len(d.b) != 0 {
		return fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	return nil
}

// version reads the leading version byte; an unknown one makes the
// record undecodable rather than misread.
func (d *decoder) version() {
	if v := d.u8(); v != recordVersion {
		d.bad = true
	}
}

// head is the chain's committed state besides the per-key records. It is
// rewritten with every block.
type head struct {
	height uint64
	hash   [32]byte
	nonce  uint64 // last tx nonce committed in a block
	stats  counters
	timeMs uint64 // the block's time, unix ms; grows with every block
}

// counters are the destination chain's own accounting (see Stats).
type counters struct {
	requests, delivered, duplicates, rejected, rolledBack, timedOut uint64
}

func (h *head) encode() []byte {
	b := make([]byte, 0, 1+8+32+8+5*8)
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, h.height)
	b = append(b, h.hash[:]...)
	b = binary.BigEndian.AppendUint64(b, h.nonce)
	for _, v := range []uint64{h.stats.requests, h.stats.delivered, h.stats.duplicates, h.stats.rejected, h.stats.rolledBack, h.timeMs, h.stats.timedOut} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeHead(b []byte) (head, error) {
	d := decoder{b: b}
	d.version()
	h := head{height: d.u64(), hash: d.hash(), nonce: d.u64()}
	h.stats = counters{requests: d.u64(), delivered: d.u64(), duplicates: d.u64(), rejected: d.u64(), rolledBack: d.u64()}
	if len(d.b) > 0 { // heads written before block times were kept end here
		h.timeMs, h.stats.timedOut = d.u64(), d.u64()
	}
	return h, d.end("head")
}

// storedTx is a tx as a block holds it.
type storedTx struct {
	kind  txKind
	nonce uint64
	hash  [32]byte
	body  []byte
}

func encodeBlock(prev, hash [32]byte, txs []*tx) []byte {
	n := 1 + 32 + 32 + 4
	for _, t := range txs {
		n += 1 + 8 + 32 + 4 + len(t.body)
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = append(b, prev[:]...)
	b = append(b, hash[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(txs)))
	for _, t := range txs {
		b = append(b, byte(t.kind))
		b = binary.BigEndian.AppendUint64(b, t.nonce)
		b = append(b, t.hash[:]...)
		b = appendBytes(b, t.body)
	}
	return b
}

// decodeBlock decodes a stored block; the txs' bodies alias b.
func decodeBlock(b []byte) (prev, hash [32]byte, txs []storedTx, err error) {
	d := decoder{b: b}
	d.version()
	prev, hash = d.hash(), d.hash()
	n := d.u32()
	// Each tx takes at least 45 bytes: bound the count by what is left
	// before allocating for it.
	if uint64(n)*45 > uint64(len(d.b)) {
		return prev, hash, nil, fmt.Errorf("%w: block claims %d txs in %d bytes", ErrCorrupt, n, len(d.b))
	}
	txs = make([]storedTx, 0, n)
	for range n {
		txs = append(txs, storedTx{kind: txKind(d.u8()), nonce: d.u64(), hash: d.hash(), body: d.bytes()})
	}
	return prev, hash, txs, d.end("block")
}

// DeliveryRecord is what the destination chain stored about one packet id:
// its first execution, and how many times a delivery of it was executed.
type DeliveryRecord struct {
	Status     amdp.ReceiptStatus
	TxHash     []byte // the first execution's tx
	Height     uint64 // the first execution's block
	ResultHash [32]byte
	Reason     string // why the contract rejected it
	Count      uint64 // executions; more than 1 means duplicates
}

func (r *DeliveryRecord) encode() []byte {
	b := make([]byte, 0, 1+4+4+len(r.TxHash)+8+32+4+len(r.Reason)+8)
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Status))
	b = appendBytes(b, r.TxHash)
	b = binary.BigEndian.AppendUint64(b, r.Height)
	b = append(b, r.ResultHash[:]...)
	b = appendBytes(b, []byte(r.Reason))
	return binary.BigEndian.AppendUint64(b, r.Count)
}

func decodeDeliveryRecord(b []byte) (DeliveryRecord, error) {
	d := decoder{b: b}
	d.version()
	r := DeliveryRecord{
		Status:     amdp.ReceiptStatus(d.u32()),
		TxHash:     append([]byte(nil), d.bytes()...),
		Height:     d.u64(),
		ResultHash: d.hash(),
		Reason:     string(d.bytes()),
		Count:      d.u64(),
	}
	return r, d.end("delivery record")
}

// rollbackRecord is what the source chain stored about one undone request.
type rollbackRecord struct {
	height uint64
	txHash [32]byte
	reason string
}

func (r *rollbackRecord) encode() []byte {
	b := make([]byte, 0, 1+8+32+4+len(r.reason))
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, r.height)
	b = append(b, r.txHash[:]...)
	return appendBytes(b, []byte(r.reason))
}

func decodeRollbackRecord(b []byte) (rollbackRecord, error) {
	d := decoder{b: b}
	d.version()
	r := rollbackRecord{height: d.u64(), txHash: d.hash(), reason: string(d.bytes())}
	return r, d.end("rollback record")
}

// requestRecord is the index entry of one accepted source request.
type requestRecord struct {
	height uint64
	txHash [32]byte
	id     [32]byte
}

func (r *requestRecord) encode() []byte {
	b := make([]byte, 0, 1+8+32+32)
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, r.height)
	b = append(b, r.txHash[:]...)
	return append(b, r.id[:]...)
}

func decodeRequestRecord(b []byte) (requestRecord, error) {
	d := decoder{b: b}
	d.version()
	r := requestRecord{height: d.u64(), txHash: d.hash(), id: d.hash()}
	return r, d.end("request record")
}

func encodeRollbackBody(pipe string, seq uint64, reason string) []byte {
	b := appendBytes(nil, []byte(pipe))
	b = binary.BigEndian.AppendUint64(b, seq)
	return appendBytes(b, []byte(reason))
}

func txHash(chainID string, nonce uint64, kind txKind, body []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(tagTx))
	var buf [8 + 4]byte
	binary.BigEndian.PutUint32(buf[:4], uint32(len(chainID)))
	h.Write(buf[:4])
	h.Write([]byte(chainID))
	binary.BigEndian.PutUint64(buf[:8], nonce)
	h.Write(buf[:8])
	h.Write([]byte{byte(kind)})
	binary.BigEndian.PutUint32(buf[:4], uint32(len(body)))
	h.Write(buf[:4])
	h.Write(body)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// blockHash commits to the previous block, the chain, the height and every
// tx (each tx hash commits to the tx's contents).
func blockHash(chainID string, prev [32]byte, height uint64, txs []*tx) [32]byte {
	h := sha256.New()
	h.Write([]byte(tagBlock))
	h.Write(appendBytes(nil, []byte(chainID)))
	h.Write(prev[:])
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], height)
	h.Write(buf[:])
	binary.BigEndian.PutUint32(buf[:4], uint32(len(txs)))
	h.Write(buf[:4])
	for _, t := range txs {
		h.Write(t.hash[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ResultHash is what the destination contract returns for a packet it
// accepts: a deterministic function of the packet id and payload, so that
// a verifier can recompute it.
func ResultHash(id [32]byte, payload []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(tagResult))
	h.Write(id[:])
	var buf [4]byte
	binary.BigEndian.PutUint32(buf[:], uint32(len(payload)))
	h.Write(buf[:])
	h.Write(payload)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
