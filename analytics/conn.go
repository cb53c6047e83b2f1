package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Connect opens a native-protocol connection pool to the ClickHouse server
// at addr (host:port of its TCP port, 9000 by default) as user "default",
// and pings it, so an unreachable server is reported here rather than at
// the first query. The dial is bounded by ctx and by 5 s. The caller closes
// the connection.
func Connect(ctx context.Context, addr string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: open clickhouse %s: %w", addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("analytics: clickhouse %s unreachable: %w", addr, err)
	}
	return conn, nil
}
