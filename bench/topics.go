package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// ensureTopics creates the cluster's topics on an external broker (as the
// embedded one seeds them), so that the listeners' first produce does not
// race the broker's auto-creation, which fails it with
// UNKNOWN_TOPIC_OR_PARTITION. Topics that exist are left as they are.
func ensureTopics(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("bench: kafka: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10000
	add := func(name string, parts int32) {
		t := kmsg.NewCreateTopicsRequestTopic()
		t.Topic, t.NumPartitions, t.ReplicationFactor = name, parts, -1
		req.Topics = append(req.Topics, t)
	}
	for _, o := range clusterOrgs {
		add(eventsTopic("relay-"+o.org), 8)
	}
	add("ccgp.receipts", 4)
	add(offence.Topic, 1)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("bench: kafka: create topics: %w", err)
	}
	var errs []error
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("topic %s: %w", t.Topic, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: kafka: create topics: %w", err)
	}
	return nil
}
