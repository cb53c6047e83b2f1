package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ccgpmesh/ccgp/ingest/simchain"
)

// TestDemoJSON runs `ccgp demo --json` for the shortest run the flags
// allow and checks its summary's books: every packet sent is delivered
// exactly once on its destination chain (the demo counts lost and
// duplicated from the chains' own delivery records), none is refused, and
// every delivered packet is confirmed. The summary is read from stdout
// alone (progress goes to stderr), so it must parse as one JSON object.
//
// Then it re-reads the chains themselves from the state the demo kept
// (--state-dir): the destination chains' delivery records must hold as
// many packets as the summary says were delivered, none twice, and the
// source chains as many requests as it says were sent, none rolled back.
// ("confirmed" still comes from the relays' counters: the governance
// node's state is kept too, but reading it needs a running node.)
func TestDemoJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole platform")
	}
	dir := filepath.Join(t.TempDir(), "state")
	r := run(t, nil, "demo", "--json", "--duration", "1s", "--rate", "200", "--payload", "64", "--state-dir", dir).must(t, 0)
	var sum struct {
		Sent       int `json:"packets_sent"`
		Delivered  int `json:"packets_delivered"`
		Receipts   int `json:"receipts"`
		Lost       int `json:"lost"`
		Duplicated int `json:"duplicated"`
		Rejected   int `json:"rejected"`
		Confirmed  int `json:"confirmed"`
		RolledBack int `json:"rolled_back"`
		Manual     int `json:"manual"`
		Pipes      int `json:"pipes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("stdout is not one JSON summary: %v\n%s", err, r.stdout)
	}
	switch {
	case sum.Sent == 0 || sum.Pipes != 4:
		t.Fatalf("nothing sent over the 4 pipes: %+v", sum)
	case sum.Delivered != sum.Sent || sum.Lost != 0 || sum.Duplicated != 0 || sum.Rejected != 0:
		t.Fatalf("destination chains' books: %+v, want every packet delivered once", sum)
	case sum.Receipts < sum.Sent:
		t.Fatalf("%d receipts for %d packets", sum.Receipts, sum.Sent)
	case sum.Confirmed != sum.Delivered || sum.RolledBack != 0 || sum.Manual != 0:
		t.Fatalf("confirmed %d of %d delivered (%d rolled back, %d manual)", sum.Confirmed, sum.Delivered, sum.RolledBack, sum.Manual)
	}
	// The chains' own word, read after the demo ended.
	var requests, delivered, duplicates, rolledBack uint64
	orgs, err := os.ReadDir(filepath.Join(dir, "chains"))
	if err != nil || len(orgs) < 2 {
		t.Fatalf("the demo kept no chains in %s: %v", dir, err)
	}
	for _, e := range orgs {
		org := e.Name()
		ch, err := simchain.Open(filepath.Join(dir, "chains", org), simchain.Options{ID: "chain-" + org})
		if err != nil {
			t.Fatalf("open the demo's chain of %s: %v", org, err)
		}
		st := ch.Stats()
		ch.Close()
		requests += st.Requests
		delivered += st.Delivered
		duplicates += st.Duplicates
		rolledBack += st.RolledBack
	}
	if int(requests) != sum.Sent || int(delivered) != sum.Delivered || duplicates != 0 || rolledBack != 0 {
		t.Fatalf("the chains say %d requests, %d delivered, %d duplicates, %d rolled back; the summary %+v",
			requests, delivered, duplicates, rolledBack, sum)
	}
	t.Logf("demo: %+v; the chains agree", sum)
}
