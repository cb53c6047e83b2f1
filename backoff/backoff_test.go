package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for n, want := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 6: 3200 * time.Millisecond, 7: 5 * time.Second, 62: 5 * time.Second, 1000: 5 * time.Second} {
		if got := p.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	p.Jitter = true
	for n := 1; n < 12; n++ {
		d := Policy{Min: p.Min, Max: p.Max}.Delay(n)
		for range 50 {
			if got := p.Delay(n); got < d/2 || got > d {
				t.Fatalf("jittered Delay(%d) = %v, outside [%v, %v]", n, got, d/2, d)
			}
		}
	}
	if got := (Policy{}).Delay(3); got != 0 {
		t.Errorf("zero policy: %v", got)
	}
}

func TestWait(t *testing.T) {
	if err := Wait(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}
}
