package verifier

import (
	"encoding/binary"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble"

	"github.com/ccgpmesh/ccgp/kv"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// backlog keeps the batches handed to the verifier on disk until their
// check is settled: the confirmation committed on the governance chain,
// or the packets recorded in MANUAL. The router commits a batch's Kafka
// offsets once the verifier has taken it, so without the backlog a
// source relay killed in between would leave the batch delivered and
// never confirmed (DESIGN §5a). One record per batch, keyed by its batch
// sequence (the router's and the compensator's are disjoint), written
// with a synced batch: pebble groups concurrent syncs into one.
type backlog struct {
	db  *pebble.DB
	log *slog.Logger
}

func openBacklog(dir string, log *slog.Logger) (*backlog, error) {
	db, err := kv.Open(dir, kv.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	return &backlog{db: db, log: log}, nil
}

func backlogKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// put stores it (a skeleton, see Enqueue) before the verifier takes it.
func (q *backlog) put(it item) error {
	rec, err := amdp.EncodeSkeletonRecord(it.b, it.rb)
	if err == nil {
		err = q.db.Set(backlogKey(it.b.Header.BatchSeq), rec, pebble.Sync)
	}
	if err != nil {
		return fmt.Errorf("verifier: store batch %d: %w", it.b.Header.BatchSeq, err)
	}
	return nil
}

// done forgets a settled batch. A failure is logged: the batch is then
// checked again after a restart, which finds it settled.
func (q *backlog) done(seq uint64) {
	if err := q.db.Delete(backlogKey(seq), pebble.NoSync); err != nil {
		q.log.Warn("verifier: settled batch not removed from the backlog", "batch_seq", seq, "err", err)
	}
}

// load returns every stored batch. A record that does not decode is
// logged, counted and left in place for a person: its packets cannot be
// named, so nothing can be recorded for them.
func (q *backlog) load(l amdp.Limits) (items []item, corrupt int, err error) {
	items, bad, err := kv.Scan(q.db, func(k, v []byte) (item, error) {
		it, err := decodeBacklog(v, l)
		if err == nil && (len(k) != 8 || binary.BigEndian.Uint64(k) != it.b.Header.BatchSeq) {
			err = fmt.Errorf("record under key %x is batch %d", k, it.b.Header.BatchSeq)
		}
		return it, err
	})
	for _, c := range bad {
		q.log.Error("verifier: corrupt backlog record; left in the store for a person", "key", fmt.Sprintf("%x", c.Key), "err", c.Err)
	}
	return items, len(bad), err
}

func decodeBacklog(rec []byte, l amdp.Limits) (item, error) {
	b, rb, err := amdp.DecodeSkeletonRecord(rec, l)
	return item{b: b, rb: rb}, err
}

func (q *backlog) close() error { return q.db.Close() }
