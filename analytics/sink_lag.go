package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// sinkTopic reports whether the sink reads topic.
func sinkTopic(topic string) bool {
	return topic == ReceiptsTopic || topic == offence.Topic || eventsTopic.MatchString(topic)
}

// report measures the lag and logs a progress line every ReportEvery,
// until ctx ends. It runs beside Run's loop, so the lag keeps being
// measured while that loop waits for ClickHouse.
func (s *Sink) report(ctx context.Context, cl *kgo.Client) {
	t := time.NewTicker(s.cfg.ReportEvery)
	defer t.Stop()
	prev, prevAt := s.Stats(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mctx, cancel := context.WithTimeout(ctx, s.cfg.ReportEvery)
		lag, err := s.lag(mctx, cl)
		cancel()
		if err == nil {
			s.update(func(st *SinkStats) { st.Lag, st.LagAt = lag, time.Now() })
		} else if ctx.Err() == nil {
			s.cfg.Log.Warn("analytics sink: cannot measure the lag", "err", err)
		}
		st, now := s.Stats(), time.Now()
		rows := func(x SinkStats) uint64 { return x.Packets + x.Receipts + x.Batches + x.Offenders }
		secs := now.Sub(prevAt).Seconds()
		s.cfg.Log.Info("analytics sink",
			"rows_per_s", int(float64(rows(st)-rows(prev))/secs),
			"records_per_s", int(float64(st.Records-prev.Records)/secs),
			"lag", st.Lag, "buffered", st.Buffered, "skipped", st.Skipped,
			"clickhouse_down", st.Down, "rows_total", rows(st))
		prev, prevAt = st, now
	}
}

// lag is the number of records in the sink's topics past its group's
// committed offsets (or past the start of a partition the group has not
// committed in): what is not yet safely in ClickHouse.
func (s *Sink) lag(ctx context.Context, cl *kgo.Client) (int64, error) {
	meta, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("metadata: %w", err)
	}
	parts := map[string][]int32{}
	for _, t := range meta.Topics {
		if t.Topic == nil || !sinkTopic(*t.Topic) {
			continue
		}
		for _, p := range t.Partitions {
			parts[*t.Topic] = append(parts[*t.Topic], p.Partition)
		}
	}
	if len(parts) == 0 {
		return 0, nil
	}
	end, err := listOffsets(ctx, cl, parts, -1)
	if err != nil {
		return 0, err
	}
	start, err := listOffsets(ctx, cl, parts, -2)
	if err != nil {
		return 0, err
	}
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Group = s.cfg.Group
	ofr, err := of.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("offset fetch: %w", err)
	}
	committed := map[topicPartition]int64{}
	for _, t := range ofr.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 && p.Offset >= 0 {
				committed[topicPartition{t.Topic, p.Partition}] = p.Offset
			}
		}
	}
	var lag int64
	for tp, e := range end {
		from, ok := committed[tp]
		if !ok {
			from = start[tp]
		}
		lag += max(e-from, 0)
	}
	return lag, nil
}

// listOffsets asks each partition's leader for its offset at ts (-1: the
// end, -2: the start).
func listOffsets(ctx context.Context, cl *kgo.Client, parts map[string][]int32, ts int64) (map[topicPartition]int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	for t, ps := range parts {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = t
		for _, p := range ps {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp = p, ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	out := map[topicPartition]int64{}
	for _, sh := range cl.RequestSharded(ctx, req) {
		if sh.Err != nil {
			return nil, fmt.Errorf("list offsets: %w", sh.Err)
		}
		for _, t := range sh.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode == 0 {
					out[topicPartition{t.Topic, p.Partition}] = p.Offset
				}
			}
		}
	}
	return out, nil
}
