// Package bench is the harness behind `ccgp bench` and `ccgp demo`: it
// starts the platform's real components in one process on loopback (a
// governance chain node, the embedded Kafka broker, simulated subchains and
// their relays: Cluster), runs traffic through them, and measures.
//
// Production code never imports it. Figures come from here, never from
// timing assertions in unit tests.
package bench
