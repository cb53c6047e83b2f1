package analytics

import (
	"reflect"
	"testing"
)

func TestAnalyticsStatements(t *testing.T) {
	got := statements("-- head\nCREATE TABLE a (\n  x String -- ok; not an end\n);\n\n-- between\nCREATE TABLE b (y UInt8);\nSELECT 1")
	want := []string{"CREATE TABLE a (\n  x String -- ok; not an end\n)", "CREATE TABLE b (y UInt8)", "SELECT 1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statements:\n%q\nwant\n%q", got, want)
	}
}
