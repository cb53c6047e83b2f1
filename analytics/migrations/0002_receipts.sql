-- 0002: receipts, one row per packet's receipt as the ccgp.receipts topic
-- carries it.
--
-- A receipt names its packet only by packet_id (a hash of pipe and seq that
-- cannot be inverted), so receipts are a table of their own, keyed by
-- packet_id, and joined with packets on it (docs/analytics.md shows the
-- query). A packet receipted again (a later attempt after FAILED) has a
-- later receipted_ms, which is also its version: the latest receipt wins,
-- and a redelivered Kafka record makes an identical row.
--
-- Not partitioned: deduplication needs every row of one packet_id in one
-- partition, and nothing about a receipt fixes a month for its packet.

CREATE TABLE IF NOT EXISTS {db}.receipts (
    packet_id      String,
    from_relay     String,
    to_relay       String,
    batch_seq      UInt64,
    status         String,
    dest_tx        String,
    dest_height    UInt64,
    reason         String,
    receipted_ms   UInt64,
    receipted_time DateTime DEFAULT toDateTime(intDiv(receipted_ms, 1000)),
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY packet_id;
