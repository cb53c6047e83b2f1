// Package verifier confirms cross-chain transactions after the fact.
//
// For every batch its relay sent, the verifier takes the signed receipts
// the destination relay returned, waits until the destination relay's
// receipt anchor is committed on the governance chain, proves that anchor
// (an ICS-23 proof against a header the validators signed), checks that
// it commits to exactly these receipts, and asks the destination chain's
// plugin whether each delivered packet's tx is there at the reported
// height with the same result hash. A batch that passes is confirmed on
// the governance chain (many per tx); a packet that does not becomes a
// TxException in MANUAL, for a person, because a receipt that the chain
// contradicts is not something a machine should paper over.
//
// Check is the deterministic core; Verifier does the waiting and the I/O.
package verifier
