package compensator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
	"github.com/ccgpmesh/ccgp/router"
)

// idle stands in for the compensator's network sides, which a store test
// never reaches: Run is not started, so nothing is sent or recorded. Any
// call is a test bug and says so.
type idle struct{}

var errIdle = errors.New("store test: no network side expected")

func (idle) Send(context.Context, string, *amdp.Batch) (*amdp.ReceiptBatch, error) {
	return nil, errIdle
}
func (idle) Exception(context.Context, *govchain.MsgTxException) error { return errIdle }
func (idle) Rollback(context.Context, string, uint64, string) error    { return errIdle }
func (idle) PacketStatus(context.Context, string, uint64) (*govchain.PacketStatus, int64, error) {
	return nil, 0, errIdle
}

// openStore opens a compensator on dir, logging into log, and closes it at
// cleanup unless the test closed it first.
func openStore(t *testing.T, dir string, log *bytes.Buffer) *Compensator {
	t.Helper()
	c, err := New(Config{RelayID: "relay-a", Signer: crypto.DevSigner("store-test"), Sender: idle{}, Recorder: idle{},
		Source: idle{}, States: idle{}, Dir: dir, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return c
}

// storedItems are one of each state an item can be stored in.
func storedItems() []*Item {
	at := time.UnixMilli(1_700_000_000_000).UTC()
	failed := newItem("pipe-a/1", "relay-b")
	failed.State, failed.Attempts, failed.NextAt, failed.Reason = govchain.PacketState_PACKET_FAILED, 2, at, "destination relay unreachable"
	proving := newItem("pipe-a/2", "relay-b")
	proving.State, proving.Proving, proving.Evidence, proving.Receipt = govchain.PacketState_PACKET_FAILED, true, EvidenceDestRefusal, []byte{1, 2, 3}
	proving.Recorded = govchain.PacketState_PACKET_FAILED
	manual := newItem("pipe-b/7", "relay-c")
	manual.State, manual.Reason, manual.Deadline, manual.TimeoutHeight = govchain.PacketState_PACKET_MANUAL, "refusal cannot be checked", at, 900
	return []*Item{failed, proving, manual}
}

func byID(items []*Item) map[[32]byte]*Item {
	m := map[[32]byte]*Item{}
	for _, it := range items {
		m[it.ID] = it
	}
	return m
}

func sameItem(a, b *Item) bool {
	return a.ID == b.ID && a.Pipe == b.Pipe && a.Seq == b.Seq && a.To == b.To && bytes.Equal(a.Packet, b.Packet) &&
		a.State == b.State && a.Attempts == b.Attempts && a.NextAt.Equal(b.NextAt) && a.Reason == b.Reason &&
		a.Deadline.Equal(b.Deadline) && a.TimeoutHeight == b.TimeoutHeight && a.Evidence == b.Evidence &&
		bytes.Equal(a.Receipt, b.Receipt) && a.Proving == b.Proving && a.Recorded == b.Recorded
}

// TestStoreRestart: what the compensator stored survives a close and a
// reopen, state for state; a record that does not decode neither fails
// the open nor costs the other items, is logged and counted, stays in the
// store (a later open still reports it) and is overwritten only when its
// packet is stored afresh.
func TestStoreRestart(t *testing.T) {
	garbage := map[string]func(it *Item) []byte{
		"not json":      func(*Item) []byte { return []byte{0xff, 0x00, 'x', '{'} },
		"truncated":     func(it *Item) []byte { b, _ := jsonItem(it); return b[:len(b)/2] },
		"other item id": func(it *Item) []byte { o := *it; o.ID[0] ^= 1; b, _ := jsonItem(&o); return b },
	}
	t.Run("clean", func(t *testing.T) {
		dir := t.TempDir()
		var log bytes.Buffer
		c := openStore(t, dir, &log)
		want := storedItems()
		if err := c.save(want); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		c = openStore(t, dir, &log)
		t.Cleanup(func() { c.Close() })
		got := byID(c.Pending())
		if len(got) != len(want) {
			t.Fatalf("restored %d items, want %d", len(got), len(want))
		}
		for _, w := range want {
			if g, ok := got[w.ID]; !ok || !sameItem(g, w) {
				t.Errorf("item %s/%d restored as %+v, want %+v", w.Pipe, w.Seq, g, w)
			}
		}
		if s := c.Stats(); s.Corrupt != 0 {
			t.Errorf("corrupt = %d, want 0", s.Corrupt)
		}
	})
	for name, bad := range garbage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var log bytes.Buffer
			c := openStore(t, dir, &log)
			want := storedItems()
			victim := want[1]
			if err := c.save(want); err != nil {
				t.Fatal(err)
			}
			if err := c.db.Set(victim.ID[:], bad(victim), nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			for open := range 2 { // reported on every open, not once and gone
				log.Reset()
				c = openStore(t, dir, &log)
				got := byID(c.Pending())
				for _, w := range want {
					g, ok := got[w.ID]
					switch {
					case w == victim && ok:
						t.Errorf("open %d: corrupt record restored as %+v", open, g)
					case w != victim && (!ok || !sameItem(g, w)):
						t.Errorf("open %d: item %s/%d lost or changed beside the corrupt one: %+v", open, w.Pipe, w.Seq, g)
					}
				}
				if s := c.Stats(); s.Corrupt != 1 || !slices.Equal(c.Corrupt(), [][32]byte{victim.ID}) {
					t.Errorf("open %d: corrupt = %d %x, want 1 [%x]", open, s.Corrupt, c.Corrupt(), victim.ID)
				}
				if !bytes.Contains(log.Bytes(), []byte("level=ERROR")) || !bytes.Contains(log.Bytes(), []byte("corrupt stored item")) {
					t.Errorf("open %d: corrupt record not logged as an error; log:\n%s", open, log.String())
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			}
			// Its packet stored afresh replaces the bad record.
			c = openStore(t, dir, &log)
			if err := c.save([]*Item{victim}); err != nil {
				t.Fatal(err)
			}
			c.Close()
			c = openStore(t, dir, &log)
			t.Cleanup(func() { c.Close() })
			if g, ok := byID(c.Pending())[victim.ID]; !ok || !sameItem(g, victim) || c.Stats().Corrupt != 0 {
				t.Errorf("restored afresh: %+v ok=%v corrupt=%d", g, ok, c.Stats().Corrupt)
			}
		})
	}
}

func jsonItem(it *Item) ([]byte, error) { return json.Marshal(it) }

// TestRefusedSurvivesKill: a refusal handed over (Rejected returned, so
// the router may commit its offsets) and the process killed before the
// compensator's loop ran a single step. The restored item must be what
// the machine made of it (FAILED, proving its evidence) and due for its
// proof, not a record without a state that nothing acts on again.
func TestRefusedSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	var log bytes.Buffer
	c := openStore(t, dir, &log)
	p := &amdp.Packet{PipeId: "pipe-a", Sequence: 4, Operation: amdp.OpWrite, Payload: []byte("x"), TimeoutHeight: 100}
	if err := amdp.SignPacket(p, crypto.DevSigner("app")); err != nil {
		t.Fatal(err)
	}
	if err := c.Rejected(context.Background(), []router.Rejection{{Packet: p, Err: check.ErrPipeNotActive}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // no Run: nothing drained
		t.Fatal(err)
	}
	c = openStore(t, dir, &log)
	t.Cleanup(func() { c.Close() })
	items := c.Pending()
	if len(items) != 1 {
		t.Fatalf("restored %d items, want 1", len(items))
	}
	it := items[0]
	if it.State != govchain.PacketState_PACKET_FAILED || !it.Proving || it.Evidence != EvidenceSourceRefusal {
		t.Fatalf("restored as state %v proving %v evidence %q; want FAILED, proving, %q", it.State, it.Proving, it.Evidence, EvidenceSourceRefusal)
	}
	// Its FAILED record may not have reached the chain before the kill:
	// it is made first, in the same sequence as the proof (a rollback
	// recorded on nothing is refused: TestKillSourceRelayCompensating).
	due := c.m.Due(time.Now())
	if len(due) != 3 || due[0].Kind != Record || due[0].State != govchain.PacketState_PACKET_FAILED || due[2].Kind != Prove {
		t.Fatalf("restored refusal: due %+v; want Record FAILED, Save, Prove", due)
	}
}
