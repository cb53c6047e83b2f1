-- 0001: the ledger tables.
--
-- Every table is a ReplacingMergeTree: its ORDER BY is the record's natural
-- key, and of the rows with the same key the one with the largest
-- `version` survives a merge, so a record the sink writes twice (Kafka
-- redelivery, a restart mid-batch) is one row, and a later state of the
-- same record replaces the earlier. Merges happen when ClickHouse chooses:
-- every query reads with FINAL or argMax(col, version) to see one row per
-- key. The partition key is a function of columns that never change for a
-- key, because rows are only deduplicated within a partition.
--
-- Times are DateTime (UTC, seconds) for filtering and partitioning, and
-- UInt64 unix milliseconds (`*_ms`) where latency needs them; 0 means "not
-- yet". No DateTime64, LowCardinality or codecs: Debian's 18.16 lacks them.
-- {db} is replaced by the database name.

CREATE TABLE IF NOT EXISTS {db}.packets (
    pipe            String,
    seq             UInt64,
    packet_id       String,
    src_org         String,
    src_relay       String,
    src_chain       String,
    dst_org         String,
    dst_relay       String,
    dst_chain       String,
    operation       String,
    payload_bytes   UInt32,
    timeout_height  UInt64,
    timeout_unix_ms UInt64,
    event_ms        UInt64,
    event_time      DateTime DEFAULT toDateTime(intDiv(event_ms, 1000)),
    status          String,
    error           String,
    dest_tx         String,
    dest_height     UInt64,
    batch_seq       UInt64,
    sent_ms         UInt64,
    receipted_ms    UInt64,
    receipted_time  DateTime DEFAULT toDateTime(intDiv(receipted_ms, 1000)),
    version         UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(event_time)
ORDER BY (pipe, seq);

CREATE TABLE IF NOT EXISTS {db}.batches (
    from_relay     String,
    to_relay       String,
    batch_seq      UInt64,
    packets        UInt32,
    bytes          UInt64,
    created_ms     UInt64,
    created_time   DateTime DEFAULT toDateTime(intDiv(created_ms, 1000)),
    receipted_ms   UInt64,
    receipted_time DateTime DEFAULT toDateTime(intDiv(receipted_ms, 1000)),
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_time)
ORDER BY (from_relay, to_relay, batch_seq);

CREATE TABLE IF NOT EXISTS {db}.anchors (
    from_relay     String,
    to_relay       String,
    batch_seq      UInt64,
    batch_root     String,
    open_height    UInt64,
    open_tx        String,
    open_time      DateTime,
    receipt_height UInt64,
    receipt_tx     String,
    receipt_time   DateTime,
    confirm_height UInt64,
    confirm_tx     String,
    confirm_time   DateTime,
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (from_relay, to_relay, batch_seq);

CREATE TABLE IF NOT EXISTS {db}.exceptions (
    pipe        String,
    seq         UInt64,
    packet_id   String,
    state       String,
    reason      String,
    height      UInt64,
    tx_hash     String,
    updated     DateTime,
    attempts    UInt32,
    resolved_by String,
    version     UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (pipe, seq);

CREATE TABLE IF NOT EXISTS {db}.governance (
    height   UInt64,
    tx_index UInt32,
    tx_hash  String,
    time     DateTime,
    msg_type String,
    signer   String,
    org      String,
    code     UInt32,
    summary  String,
    version  UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (height, tx_index);

CREATE TABLE IF NOT EXISTS {db}.offenders (
    time_ms   UInt64,
    time      DateTime DEFAULT toDateTime(intDiv(time_ms, 1000)),
    reporter  String,
    stage     String,
    reason    String,
    org       String,
    relay     String,
    pipe      String,
    seq       UInt64,
    packet_id String,
    detail    String,
    proven    UInt8,
    evidence  String,
    version   UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (org, relay, time_ms, reporter, stage, reason, pipe, seq, packet_id);

CREATE TABLE IF NOT EXISTS {db}.anomalies (
    rule       String,
    key        String,
    first_seen DateTime,
    last_seen  DateTime,
    severity   String,
    value      Float64,
    threshold  Float64,
    message    String,
    resolved   UInt8,
    version    UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (rule, key, first_seen);

CREATE TABLE IF NOT EXISTS {db}.credit_scores (
    party           String,
    kind            String,
    window_start    DateTime,
    window_end      DateTime,
    score           Float64,
    delivery        Float64,
    timeliness      Float64,
    offences        Float64,
    compensations   Float64,
    availability    Float64,
    packets         UInt64,
    proven_offences UInt64,
    computed        DateTime,
    evidence_digest String,
    version         UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (kind, party, window_start, window_end);
