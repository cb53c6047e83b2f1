package analytics

import (
	"strings"
	"testing"
	"unicode/utf8"

	abci "github.com/cometbft/cometbft/abci/types"
)

func TestGovSummary(t *testing.T) {
	ev := func(typ string, kv ...string) abci.Event {
		e := abci.Event{Type: typ}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Attributes = append(e.Attributes, abci.EventAttribute{Key: kv[i], Value: kv[i+1]})
		}
		return e
	}
	long := strings.Repeat("é", maxSummary) // two bytes each: a cut may fall inside one
	for _, tc := range []struct {
		name string
		res  *abci.ExecTxResult
		want string
	}{
		{"refused", &abci.ExecTxResult{Code: 9, Log: "open-batches relay-a/1: batch already anchored"}, "refused (code 9): open-batches relay-a/1: batch already anchored"},
		{"events", &abci.ExecTxResult{Events: []abci.Event{ev("proposal", "id", "3", "kind", "org"), ev("vote", "approve", "true")}}, "proposal id=3 kind=org; vote approve=true"},
		{"no events", &abci.ExecTxResult{}, "register-app"},
		{"long", &abci.ExecTxResult{Code: 5, Log: "x" + long}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summary("register-app", tc.res)
			if tc.name == "long" {
				if len(got) > maxSummary || len(got) < maxSummary-1 || !utf8.ValidString(got) || !strings.HasPrefix(got, "refused (code 5): xé") {
					t.Fatalf("long summary: %d bytes, valid %v: %q...", len(got), utf8.ValidString(got), got[:30])
				}
				return
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
