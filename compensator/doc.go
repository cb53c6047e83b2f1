// Package compensator drives every cross-chain transaction that left the
// happy path to a final, recorded state (DESIGN §5).
//
// Machine is the deterministic core: it takes events (a packet refused, a
// batch undeliverable, a resend's outcome, a person's resolution, the
// clock) and returns the actions to take, in order: record a transition on
// the governance chain, roll the request back on the source chain, resend
// packets, forget a finished packet. It does no I/O, so every path is a
// table test. Compensator is the thin wrapper that persists the pending
// packets (pebble, synced before the router commits offsets), performs the
// actions and feeds their outcomes back.
//
// Policy: a deterministic refusal by the destination (or at stage 1) is
// rolled back on the source chain at once. A batch the router could not
// deliver within its send budget is retried with exponential backoff and
// jitter up to MaxAttempts; then it waits in MANUAL for a person
// (`ccgp manual resolve ID --action retry|rollback|accept`).
package compensator
