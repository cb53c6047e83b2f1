package main

import (
	"encoding/json"
	"testing"
)

// TestDemoJSON runs `ccgp demo --json` for the shortest run the flags
// allow and checks its summary's books: every packet sent is delivered
// exactly once on its destination chain (the demo counts lost and
// duplicated from the chains' own delivery records), none is refused, and
// every delivered packet is confirmed. The summary is read from stdout
// alone (progress goes to stderr), so it must parse as one JSON object.
//
// Not yet: an independent re-read of the chains after the run (the demo
// removes its state directory on exit), and "confirmed" comes from the
// relays' counters, not from the governance chain's packet states.
func TestDemoJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole platform")
	}
	r := run(t, nil, "demo", "--json", "--duration", "1s", "--rate", "200", "--payload", "64").must(t, 0)
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
	t.Logf("demo: %+v", sum)
}
