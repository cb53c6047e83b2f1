package mesh

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/kv"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Key layout of the dedupe store. Each key is a one-byte kind and a 32-byte
// packet id:
//
//	'r' id → the packet's final receipt (amdp.Receipt, protobuf)
//	'm' id → in-flight marker: delivery may have started (u64 unix ms)
//	'a' uvarint(len(peer)) peer be64(batch seq) → a receipt batch still
//	  owed to the OnReceipts hook (the relay's receipt anchor), see owed
//
// A packet with a receipt was delivered (or refused by the destination
// contract) and is never delivered again. A packet with a marker and no
// receipt was handed to the chain by a delivery that did not finish (a
// crash, a Deliver error): only the chain knows whether it landed, so the
// next attempt asks FindDelivery first.
//
// One more key holds the endpoint's QUIC stateless reset key (see
// statelessResetKey).
const (
	keyReceipt = 'r'
	keyMarker  = 'm'
	keyOwed    = 'a'
	keyLen     = 1 + 32
)

var keyResetKey = []byte("k/quic-stateless-reset")

// blockCacheSize is the store's block cache: enough for the recent
// receipts that resends ask for, and for the filter and index blocks.
const blockCacheSize = 32 << 20

// DedupeStore is the receiving relay's persistent record of delivered
// packets, keyed by packet id (DESIGN §5: at-least-once transport plus
// idempotent delivery). Writes are synced batches: a receipt the relay
// has acknowledged survives a crash. It is safe for concurrent use; the
// Endpoint makes sure that one packet is processed by one goroutine at a
// time.
type DedupeStore struct {
	db   *pebble.DB
	sync *pebble.WriteOptions
}

// OpenDedupeStore opens (or creates) the store in dir. Only one process
// may have it open: pebble locks the directory.
func OpenDedupeStore(dir string, log *slog.Logger) (*DedupeStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := kv.Open(dir, kv.Options{Log: log, Hot: blockCacheSize})
	if err != nil {
		return nil, fmt.Errorf("mesh: open dedupe store %s: %w", dir, err)
	}
	s := &DedupeStore{db: db, sync: pebble.Sync}
	if n, err := s.countMarkers(); err != nil {
		db.Close()
		return nil, err
	} else if n > 0 {
		// Markers without receipts are deliveries that did not finish; the
		// senders will retry those batches, and FindDelivery will settle them.
		log.Warn("dedupe store holds unfinished deliveries; they are settled when their batches are retried", "dir", dir, "packets", n)
	}
	return s, nil
}

// Close closes the store.
func (s *DedupeStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("mesh: close dedupe store: %w", err)
	}
	return nil
}

func key(kind byte, id [32]byte) []byte {
	k := make([]byte, keyLen)
	k[0] = kind
	copy(k[1:], id[:])
	return k
}

// Lookup returns, for each id, its final receipt (nil when there is none)
// and whether it carries an in-flight marker. It reads one consistent
// snapshot.
//
// Most ids looked up are new, so most lookups are for keys that do not
// exist: they are answered by the tables' bloom filters, including in the
// bottom level, whose filters point reads (DB.Get) skip.
func (s *DedupeStore) Lookup(ids [][32]byte) (receipts []*amdp.Receipt, marked []bool, err error) {
	receipts = make([]*amdp.Receipt, len(ids))
	marked = make([]bool, len(ids))
	it, err := s.db.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: lookup: %v", ErrStore, err)
	}
	defer it.Close()
	var k [keyLen]byte
	for i, id := range ids {
		copy(k[1:], id[:])
		k[0] = keyReceipt
		if it.SeekPrefixGE(k[:]) && bytes.Equal(it.Key(), k[:]) {
			v, err := it.ValueAndErr()
			if err != nil {
				return nil, nil, fmt.Errorf("%w: get receipt %x: %v", ErrStore, id, err)
			}
			r := new(amdp.Receipt)
			if err := proto.Unmarshal(v, r); err != nil {
				return nil, nil, fmt.Errorf("%w: receipt of %x: %v", ErrStore, id, err)
			}
			receipts[i] = r
			continue
		}
		k[0] = keyMarker
		marked[i] = it.SeekPrefixGE(k[:]) && bytes.Equal(it.Key(), k[:])
	}
	if err := it.Error(); err != nil {
		return nil, nil, fmt.Errorf("%w: lookup: %v", ErrStore, err)
	}
	return receipts, marked, nil
}

// Receipt returns the final receipt of one packet, if there is one.
func (s *DedupeStore) Receipt(id [32]byte) (*amdp.Receipt, bool, error) {
	rs, _, err := s.Lookup([][32]byte{id})
	if err != nil {
		return nil, false, err
	}
	return rs[0], rs[0] != nil, nil
}

// MarkInFlight records, in one synced batch, that delivery of ids is
// about to start.
func (s *DedupeStore) MarkInFlight(ids [][32]byte) error {
	if len(ids) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(time.Now().UnixMilli()))
	for _, id := range ids {
		if err := b.Set(key(keyMarker, id), v[:], nil); err != nil {
			return fmt.Errorf("%w: mark %x: %v", ErrStore, id, err)
		}
	}
	if err := b.Commit(s.sync); err != nil {
		return fmt.Errorf("%w: commit markers: %v", ErrStore, err)
	}
	return nil
}

// Commit records the final receipts, and clears their packets' markers,
// in one synced batch.
func (s *DedupeStore) Commit(receipts []*amdp.Receipt) error { return s.commit(receipts, nil) }

// commit is Commit plus, when o is not nil, o's owed record, in the same
// synced batch: the receipts a sender is about to get and the duty to
// anchor them become durable together.
func (s *DedupeStore) commit(receipts []*amdp.Receipt, o *owed) error {
	if len(receipts) == 0 && o == nil {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if o != nil {
		k, v, err := o.encode()
		if err != nil {
			return err
		}
		if err := b.Set(k, v, nil); err != nil {
			return fmt.Errorf("%w: put owed receipts of %s/%d: %v", ErrStore, o.batch.Header.FromRelay, o.batch.Header.BatchSeq, err)
		}
	}
	var buf []byte
	for _, r := range receipts {
		var id [32]byte
		if copy(id[:], r.GetPacketId()) != 32 {
			return fmt.Errorf("%w: receipt with a %d-byte packet id", ErrStore, len(r.GetPacketId()))
		}
		var err error
		buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf[:0], r)
		if err != nil {
			return fmt.Errorf("%w: encode receipt %x: %v", ErrStore, id, err)
		}
		// Set copies the value, so buf is reused.
		if err := b.Set(key(keyReceipt, id), buf, nil); err != nil {
			return fmt.Errorf("%w: put receipt %x: %v", ErrStore, id, err)
		}
		if err := b.Delete(key(keyMarker, id), nil); err != nil {
			return fmt.Errorf("%w: clear marker %x: %v", ErrStore, id, err)
		}
	}
	if err := b.Commit(s.sync); err != nil {
		return fmt.Errorf("%w: commit receipts: %v", ErrStore, err)
	}
	return nil
}

// owed is a receipt batch the OnReceipts hook has not acknowledged yet
// (Endpoint.Anchored): the batch it answers, stripped to what anchoring
// needs (the header's relays and sequence, each packet's pipe id and
// sequence), and its receipts, unsealed. The receipt root is a function of
// the receipts alone, so sealing them again at replay gives the root the
// sender got.
type owed struct {
	batch    *amdp.Batch
	receipts *amdp.ReceiptBatch
}

// newOwed strips b to what its record keeps; rh gives the receipt batch's
// relays and sequence (the rest of a header is the seal's).
func newOwed(b *amdp.Batch, rh *amdp.ReceiptBatchHeader, receipts []*amdp.Receipt) *owed {
	return &owed{batch: b.Skeleton(), receipts: &amdp.ReceiptBatch{Receipts: receipts,
		Header: &amdp.ReceiptBatchHeader{FromRelay: rh.GetFromRelay(), ToRelay: rh.GetToRelay(), BatchSeq: rh.GetBatchSeq()}}}
}

// owedKey is the key of the owed record of batch seq from peer.
func owedKey(peer string, seq uint64) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen64+len(peer)+8)
	k = append(k, keyOwed)
	k = binary.AppendUvarint(k, uint64(len(peer)))
	k = append(k, peer...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// encode is the record's key and value (amdp.EncodeSkeletonRecord).
func (o *owed) encode() (k, v []byte, err error) {
	if v, err = amdp.EncodeSkeletonRecord(o.batch, o.receipts); err != nil {
		return nil, nil, fmt.Errorf("%w: owed receipts: %v", ErrStore, err)
	}
	return owedKey(o.batch.Header.FromRelay, o.batch.Header.BatchSeq), v, nil
}

func decodeOwed(v []byte) (*owed, error) {
	b, rb, err := amdp.DecodeSkeletonRecord(v, amdp.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStore, err)
	}
	return &owed{batch: b, receipts: rb}, nil
}

// owedAll returns every owed record, in key order.
func (s *DedupeStore) owedAll() ([]*owed, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyOwed}, UpperBound: []byte{keyOwed + 1}})
	if err != nil {
		return nil, fmt.Errorf("%w: scan owed receipts: %v", ErrStore, err)
	}
	var out []*owed
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("%w: scan owed receipts: %v", ErrStore, err)
		}
		o, err := decodeOwed(v)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("key %x: %w", it.Key(), err)
		}
		out = append(out, o)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("%w: scan owed receipts: %v", ErrStore, err)
	}
	return out, nil
}

// settleOwed deletes the owed record of batch seq from peer. Not synced:
// a delete lost in a crash only has the batch told to the hook once more.
func (s *DedupeStore) settleOwed(peer string, seq uint64) error {
	if err := s.db.Delete(owedKey(peer, seq), pebble.NoSync); err != nil {
		return fmt.Errorf("%w: settle owed receipts of %s/%d: %v", ErrStore, peer, seq, err)
	}
	return nil
}

// statelessResetKey returns the endpoint's QUIC stateless reset key,
// made and stored on first use. Keeping it across restarts is what makes
// it useful: a relay that restarts at the same address answers packets
// of its previous incarnation's connections with a stateless reset, so
// its peers drop those connections at once and redial, instead of
// waiting out the idle timeout.
func (s *DedupeStore) statelessResetKey() (*quic.StatelessResetKey, error) {
	var key quic.StatelessResetKey
	v, closer, err := s.db.Get(keyResetKey)
	switch {
	case err == nil:
		n := copy(key[:], v)
		closer.Close()
		if n != len(key) {
			return nil, fmt.Errorf("%w: stateless reset key of %d bytes", ErrStore, len(v))
		}
		return &key, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("%w: get stateless reset key: %v", ErrStore, err)
	}
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("mesh: stateless reset key: %w", err)
	}
	if err := s.db.Set(keyResetKey, key[:], s.sync); err != nil {
		return nil, fmt.Errorf("%w: put stateless reset key: %v", ErrStore, err)
	}
	return &key, nil
}

func (s *DedupeStore) countMarkers() (int, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyMarker}, UpperBound: []byte{keyMarker + 1}})
	if err != nil {
		return 0, fmt.Errorf("%w: scan markers: %v", ErrStore, err)
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("%w: scan markers: %v", ErrStore, err)
	}
	return n, nil
}
