package analytics

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	cmtbytes "github.com/cometbft/cometbft/libs/bytes"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/govchain/govchaintest"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// TestSinkDecode: the rows each kind of record makes, with the pipe's
// endpoints read from the governance node, and the records refused.
func TestSinkDecode(t *testing.T) {
	gov := governance(t)
	at := time.UnixMilli(1_764_720_000_123)
	stamp := func(r *kgo.Record) *kgo.Record { r.Timestamp = at; return r }
	pkt := stamp(packetRecord(t, "ccgp.events.relay-org-1", testPipe, 9))
	id := amdp.PacketID(testPipe, 9)
	rcpt := stamp(receiptRecord(t, testPipe, 4, []uint64{8, 9}))
	off := stamp(offenceRecord(2))
	for _, tc := range []struct {
		name string
		rec  *kgo.Record
		want rows
		bad  string // a substring of the error, for a refused record
	}{
		{name: "packet", rec: pkt, want: rows{packets: []packetRow{{pipe: testPipe, seq: 9, packetID: hexID(id),
			srcOrg: "org-1", srcRelay: "relay-org-1", srcChain: "chain-org-1", dstOrg: "org-2", dstRelay: "relay-org-2", dstChain: "chain-org-2",
			operation: "WRITE", payloadBytes: 9, timeoutHeight: 1009, eventMs: 1_764_720_000_123}}}},
		{name: "packet of an unregistered pipe", rec: stamp(packetRecord(t, "ccgp.events", "pipe-x", 1)), want: rows{packets: []packetRow{{
			pipe: "pipe-x", seq: 1, packetID: hexID(amdp.PacketID("pipe-x", 1)), operation: "WRITE", payloadBytes: 9, timeoutHeight: 1001, eventMs: 1_764_720_000_123}}}},
		{name: "receipt batch", rec: rcpt, want: rows{
			receipts: []receiptRow{
				{packetID: hexID(amdp.PacketID(testPipe, 8)), fromRelay: "relay-org-2", toRelay: "relay-org-1", batchSeq: 4, status: "DELIVERED",
					destTx: hex.EncodeToString(fmt.Appendf(nil, "tx-%030d", 8)), destHeight: 508, receiptedMs: 1_764_720_000_123},
				{packetID: hexID(amdp.PacketID(testPipe, 9)), fromRelay: "relay-org-2", toRelay: "relay-org-1", batchSeq: 4, status: "FAILED",
					destHeight: 509, reason: "contract reverted", receiptedMs: 1_764_720_000_123},
			},
			batches: []batchRow{{fromRelay: "relay-org-1", toRelay: "relay-org-2", batchSeq: 4, packets: 2, receiptedMs: 1_764_720_000_123}}}},
		{name: "offence", rec: off, want: rows{offenders: []offenderRow{{TimeUnixMs: 1_764_720_000_002, Reporter: "relay-org-2",
			Stage: offence.StageReceiver, Reason: "bad_signature", Org: "org-1", Relay: "relay-org-1", Pipe: testPipe, Seq: 2, Proven: true,
			Evidence: []byte{0, 1, 2, 2}}}}},
		{name: "not a packet", rec: &kgo.Record{Topic: "ccgp.events", Value: []byte("hello")}, bad: "ccgp.events/0@0"},
		{name: "empty packet", rec: &kgo.Record{Topic: "ccgp.events"}, bad: "pipe_id"},
		{name: "not a receipt batch", rec: &kgo.Record{Topic: ReceiptsTopic, Value: pkt.Value}, bad: "receipt"},
		{name: "offence without reason", rec: &kgo.Record{Topic: offence.Topic, Value: []byte(`{"stage":"router"}`)}, bad: "no stage or reason"},
		{name: "another topic", rec: &kgo.Record{Topic: "ccgp.eventsx", Value: pkt.Value}, bad: "not a topic the sink reads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(gov)
			var got rows
			err := d.add(context.Background(), &got, tc.rec)
			if tc.bad != "" {
				if !errors.Is(err, errBadRecord) || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("got %v, want errBadRecord naming %q", err, tc.bad)
				}
				if got.len() != 0 {
					t.Fatalf("a refused record made %d rows", got.len())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("rows\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func hexID(id [32]byte) string { return hex.EncodeToString(id[:]) }

// TestSinkGovernanceUnanswered: while the governance node's answers do not
// verify, the sink writes no packet row (a row without its endpoints would
// stay so) and keeps asking; once they verify the row arrives complete.
func TestSinkGovernanceUnanswered(t *testing.T) {
	conn, _, db := chtest.Database(t)
	governance(t) // the shared node, with the pipe
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root, err := govFixture.node.TrustRoot()
	if err != nil {
		t.Fatal(err)
	}
	tp := govchaintest.NewTamper(govFixture.node.RPC())
	gov, err := govchain.NewClient(ctx, tp, govchain.WithTrustRoot(root))
	if err != nil {
		t.Fatal(err)
	}
	tp.OnQuery(func(_ string, _ cmtbytes.HexBytes, res *ctypes.ResultABCIQuery) {
		res.Response.Value = []byte("forged")
	})
	brokers, prod := kafka(t)
	produce(t, prod, false, packetRecord(t, "ccgp.events", testPipe, 1))
	r := startSink(t, SinkConfig{Brokers: brokers, Conn: conn, Database: db, Group: "sink-gov", Pipes: gov,
		Interval: 100 * time.Millisecond, ReportEvery: 100 * time.Millisecond}, nil)
	eventually(t, 20*time.Second, "the lag measured", func() bool { return r.s.Stats().Lag == 1 })
	time.Sleep(500 * time.Millisecond)
	if st := r.s.Stats(); st.Packets != 0 || st.Lag != 1 {
		t.Fatalf("while governance forges answers: %+v", st)
	}
	tp.Clear()
	eventually(t, 20*time.Second, "the packet after governance answers", func() bool { return r.s.Stats().Packets == 1 })
	var org string
	if err := conn.QueryRow(ctx, "SELECT src_org FROM "+db+".packets FINAL WHERE seq = 1").Scan(&org); err != nil || org != "org-1" {
		t.Fatalf("src_org %q, %v", org, err)
	}
}

// FuzzSinkDecode: any bytes on any topic make rows or errBadRecord, never
// a panic or another error.
func FuzzSinkDecode(f *testing.F) {
	pkt := packetRecord(f, "ccgp.events", testPipe, 1)
	f.Add(0, pkt.Value)
	f.Add(1, receiptRecord(f, testPipe, 1, []uint64{1, 2}).Value)
	f.Add(2, offenceRecord(1).Value)
	f.Add(0, []byte{})
	f.Add(1, []byte{0x12, 0xff, 0xff, 0xff, 0x0f})
	f.Add(2, []byte(`{"stage":"router","reason":"x","evidence":"!!"}`))
	topics := []string{"ccgp.events", ReceiptsTopic, offence.Topic}
	// Unregistered pipes are proven absent by the real node; the fuzzer's
	// pipe ids are almost all unregistered, so each costs a proven read.
	var d *decoder
	f.Fuzz(func(t *testing.T, topic int, value []byte) {
		if d == nil {
			d = newDecoder(governance(t))
		}
		var b rows
		err := d.add(context.Background(), &b, &kgo.Record{Topic: topics[uint(topic)%3], Value: value})
		if err != nil && !errors.Is(err, errBadRecord) {
			t.Fatalf("topic %d: %v", topic, err)
		}
	})
}
