package ingest

import (
	"fmt"
	"github.com/klauspost/compress/zstd"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultTopic is the Kafka topic of cross-chain requests.
const DefaultTopic = "ccgp.events"

// Headers of every record a Listener produces. The key is the pipe id and
// the value the packet's protobuf encoding (amdp.EncodePacket).
const (
	HeaderChain  = "ccgp-chain"  // source subchain id
	HeaderHeight = "ccgp-height" // source block height, in decimal
	HeaderTxHash = "ccgp-tx"     // source tx hash, raw bytes
)

// NewKafkaClient returns a franz-go client set up for the listeners'
// producing: idempotent (franz-go's default) with acks from all in-sync
// replicas, a short linger with zstd batches, a bounded buffer (Produce
// blocks when it is full, which holds the listener back), key-hash
// partitioning so that one pipe stays on one partition in order, and a
// delivery timeout so that a Kafka that is gone fails records instead of
// holding them forever.
//
// The timeout needs AllowIdempotentProduceCancellation: without it an
// idempotent client never fails a record that may have been sent, and a
// listener facing a dead broker would wait forever instead of stopping
// with an error. The price is that a failed record may still have landed;
// the listener did not checkpoint it and produces it again after a
// restart, a duplicate after the checkpoint, which the router drops by
// sequence as it does after a crash. The client's own retries stay
// deduplicated by idempotency.
//
// opts come last and override any of these.
func NewKafkaClient(brokers []string, opts ...kgo.Opt) (*kgo.Client, error) {
	if len(brokers) == 0 {
		return nil, fmt.Errorf("%w: no Kafka brokers", ErrConfig)
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2 * time.Millisecond),
		// zstd's fastest level: the same ratio on packets as the default
		// level (signatures and keys do not compress; payloads and
		// field tags do) for two thirds of the CPU.
		kgo.ProducerBatchCompression(kgo.ZstdCompression().WithLevel(int(zstd.SpeedFastest))),
		kgo.MaxBufferedRecords(1 << 16),
		kgo.MaxBufferedBytes(64 << 20),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(30 * time.Second),
		kgo.AllowIdempotentProduceCancellation(),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("ingest: kafka client: %w", err)
	}
	return cl, nil
}
