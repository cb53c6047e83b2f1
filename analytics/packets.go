package analytics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// PacketState is a packet's latest recorded state.
type PacketState struct {
	Pipe       string
	Seq        uint64
	PacketID   string
	Status     string
	DestTx     string
	DestHeight uint64
	Version    uint64
}

// PacketStatus returns the latest state of packet (pipe, seq) in db. It is
// the model for every query the package ships: it reads with FINAL, so a
// row the sink wrote twice, or an earlier state not yet merged away, is
// never seen.
func PacketStatus(ctx context.Context, conn driver.Conn, db, pipe string, seq uint64) (PacketState, error) {
	var p PacketState
	if !identifier.MatchString(db) {
		return p, fmt.Errorf("%w: %q", ErrBadDatabase, db)
	}
	err := conn.QueryRow(ctx, "SELECT pipe, seq, packet_id, status, dest_tx, dest_height, version FROM `"+db+"`.packets FINAL WHERE pipe = ? AND seq = ?", pipe, seq).
		Scan(&p.Pipe, &p.Seq, &p.PacketID, &p.Status, &p.DestTx, &p.DestHeight, &p.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: packet %s/%d", ErrNotFound, pipe, seq)
	}
	if err != nil {
		return p, fmt.Errorf("analytics: packet %s/%d: %w", pipe, seq, err)
	}
	return p, nil
}
