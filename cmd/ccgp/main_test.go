package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var ccgpBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ccgp-cli-")
	if err != nil {
		panic(err)
	}
	ccgpBin = filepath.Join(dir, "ccgp")
	if out, err := exec.Command("go", "build", "-o", ccgpBin, ".").CombinedOutput(); err != nil {
		panic("build ccgp: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// run executes the binary with a clean environment and a time bound.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ccgpBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{so.String(), se.String(), 0}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func (r result) must(t *testing.T, wantCode int, want ...string) result {
	t.Helper()
	if r.code != wantCode {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, wantCode, r.stdout, r.stderr)
	}
	all := r.stdout + r.stderr
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", w, r.stdout, r.stderr)
		}
	}
	if strings.Contains(all, "goroutine ") || strings.Contains(all, "panic:") {
		t.Fatalf("stack trace in output:\n%s", all)
	}
	return r
}

func TestCLIKeys(t *testing.T) {
	home := t.TempDir()
	env := []string{"CCGP_HOME=" + home, "CCGP_PASSPHRASE=correct horse battery"}
	run(t, env, "keys", "add", "alice").must(t, 0, "alice", "yes")
	raw, err := os.ReadFile(filepath.Join(home, "keys", "alice.json"))
	if err != nil || strings.Contains(string(raw), "plain") {
		t.Fatalf("key file: %v %s", err, raw)
	}
	run(t, env, "keys", "add", "alice").must(t, 1, "already exists")
	run(t, []string{"CCGP_HOME=" + home}, "keys", "show", "alice", "-o", "json").must(t, 0, `"name": "alice"`)
	run(t, []string{"CCGP_HOME=" + home}, "keys", "add", "bob").must(t, 1, "passphrase")
	run(t, env, "keys", "add", "../x").must(t, 2, "key name")
	run(t, env, "keys", "show", "nobody").must(t, 1, "key not found")
	run(t, env, "keys", "list", "-o", "yaml").must(t, 2, "unknown output format")
	dev := run(t, []string{"CCGP_HOME=" + home}, "keys", "add", "dev", "--insecure-dev-keys").must(t, 0, "NO (dev key)")
	if !strings.Contains(dev.stderr, "WARNING") {
		t.Fatal("insecure keys used without a warning")
	}
	run(t, env, "keys", "show").must(t, 2, "takes 1 argument")
	run(t, env, "--help").must(t, 0, "ccgp demo")
	run(t, env, "gov", "pipe", "apply", "--help").must(t, 0, "--source-contract", "Example")
}

func TestCLIDemoBadInput(t *testing.T) {
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "kept"), []byte("x"), 0o644)
	run(t, nil, "demo", "--state-dir", full).must(t, 2, "--state-dir", "is not empty")
	notDir := filepath.Join(full, "kept")
	run(t, nil, "demo", "--state-dir", notDir).must(t, 2, "--state-dir")
}

func TestCLIKafkaDevBadInput(t *testing.T) {
	run(t, nil, "kafka", "dev", "--listen", "127.0.0.1:0", "--retention", "10ms").must(t, 2, "--retention 10ms: at least 1s")
	run(t, nil, "kafka", "dev", "--listen", "nowhere").must(t, 2, "--listen")
}

func TestCLIGovernance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := filepath.Join(t.TempDir(), "net")
	env := []string{"CCGP_HOME=" + dir}
	run(t, env, "testnet", "--validators", "1", "--genesis-orgs", "1", "--out", dir, "--base-port", "0", "--block-interval", "100ms", "--insecure-dev-keys").
		must(t, 0, "validator0", "gov-<org>")
	var tn struct {
		Nodes []struct{ Home, RPC string }
	}
	b, err := os.ReadFile(filepath.Join(dir, "testnet.json"))
	if err != nil || json.Unmarshal(b, &tn) != nil || len(tn.Nodes) != 1 {
		t.Fatalf("testnet.json: %v %s", err, b)
	}
	run(t, env, "testnet", "--validators", "1", "--out", dir, "--insecure-dev-keys").must(t, 1, "not empty")

	node := exec.Command(ccgpBin, "node", "start", "--home", tn.Nodes[0].Home, "--log-level", "error")
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { node.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			node.Process.Kill()
		}
	})
	env = append(env, "CCGP_NODE="+tn.Nodes[0].RPC, "CCGP_GENESIS="+filepath.Join(tn.Nodes[0].Home, "config", "genesis.json"))
	dev := "--insecure-dev-keys"
	// Wait until the node answers.
	deadline := time.Now().Add(30 * time.Second)
	for run(t, env, "gov", "params").code != 0 {
		if time.Now().After(deadline) {
			t.Fatal("node did not come up")
		}
		time.Sleep(200 * time.Millisecond)
	}
	run(t, env, "gov", "params").must(t, 0, "QUORUM NUM", "proof verified")

	run(t, env, "keys", "add", "x-admin", dev).must(t, 0)
	run(t, env, "gov", "org", "apply", "org-x", "--name", "Org X", "--from", "x-admin", dev).must(t, 0, "proposal 1 opened", "admit-org org-x")
	run(t, env, "gov", "org", "show", "org-x").must(t, 0, "pending")
	run(t, env, "gov", "vote", "1", "yes", "--from", "gov-org-1", dev).must(t, 0, "proposal 1 passed")
	var org map[string]any
	out := run(t, env, "gov", "org", "show", "org-x", "-o", "json").must(t, 0)
	if err := json.Unmarshal([]byte(out.stdout), &org); err != nil || org["status"] != "active" {
		t.Fatalf("org json: %v %s", err, out.stdout)
	}
	run(t, env, "gov", "vote", "1", "yes", "--from", "gov-org-1", dev).must(t, 1, "rejected: vote: proposal 1 is already passed")
	run(t, env, "gov", "proposal", "list").must(t, 0, "1 yes, 0 no of 1")

	// Cross-chain account, relay, subchain, app, contract through the CLI.
	run(t, env, "keys", "add", "relay-x", dev).must(t, 0)
	run(t, env, "gov", "account", "propose", "--role", "cross-chain", "--key", "relay-x", "--from", "x-admin", dev).must(t, 0, "proposal 2 opened")
	run(t, env, "gov", "vote", "2", "yes", "--from", "gov-org-1", dev).must(t, 0, "passed")
	fp := strings.Repeat("ab", 32)
	run(t, env, "gov", "service", "register", "relay-x", "--address", "127.0.0.1:7001", "--tls-fingerprint", fp, "--account", "relay-x", "--from", "x-admin", dev).must(t, 0, "committed")
	run(t, env, "gov", "subchain", "register", "chain-x", "--relay", "relay-x", "--from", "x-admin", dev).must(t, 0)
	run(t, env, "gov", "service", "list").must(t, 0, "relay-x", "127.0.0.1:7001")

	// When a party misbehaves: update, rotate, revoke, expel.
	run(t, env, "gov", "service", "register", "relay-z", "--address", "127.0.0.1:7003", "--account", "relay-x", "--from", "x-admin", dev).must(t, 2, "--tls-fingerprint is required")
	run(t, env, "gov", "service", "update", "relay-x", "--address", "127.0.0.1:7002", "--from", "x-admin", dev).must(t, 2, "--tls-fingerprint is required")
	run(t, env, "gov", "service", "update", "relay-x", "--address", "127.0.0.1:7002", "--tls-fingerprint", "abcd", "--from", "x-admin", dev).must(t, 2, "64 hex digits")
	run(t, env, "gov", "service", "update", "relay-x", "--tls-fingerprint", fp, "--from", "x-admin", dev).must(t, 2, "--address is required")
	run(t, env, "gov", "service", "update", "relay-x", "--address", "127.0.0.1:7002", "--tls-fingerprint", strings.Repeat("cd", 32), "--from", "gov-org-1", dev).
		must(t, 1, "rejected: update-service relay-x: relay belongs to org org-x")
	run(t, env, "gov", "service", "update", "relay-x", "--address", "127.0.0.1:7002", "--tls-fingerprint", strings.Repeat("cd", 32), "--from", "x-admin", dev).
		must(t, 0, "service relay-x of org org-x is updated")
	run(t, env, "gov", "service", "show", "relay-x").must(t, 0, "127.0.0.1:7002", strings.Repeat("cd", 32))

	run(t, env, "keys", "add", "relay-x2", dev).must(t, 0)
	run(t, env, "keys", "add", "relay-x3", dev).must(t, 0)
	run(t, env, "gov", "account", "rotate-key", "--from", "relay-x", dev).must(t, 2, "--new-key is required")
	run(t, env, "gov", "account", "rotate-key", "--new-key", "relay-x2", "--from", "relay-x", dev).must(t, 0, "uses its new key from height")
	run(t, env, "gov", "account", "rotate-key", "--new-key", "relay-x3", "--from", "relay-x", dev).must(t, 1, "rejected", "rotated this key away")
	// The new key sends for the account it was rotated onto.
	rot := run(t, env, "gov", "account", "rotate-key", "--new-key", "relay-x3", "--from", "relay-x2", "-o", "json", dev).must(t, 0, `"key_height"`)
	if !strings.Contains(rot.stdout, `"height"`) {
		t.Fatalf("rotate-key json: %s", rot.stdout)
	}

	run(t, env, "gov", "account", "revoke", "zz", "--from", "x-admin", dev).must(t, 2, "neither an address nor a key")
	run(t, env, "gov", "account", "revoke", "relay-x", "--reason", "key leaked", "--from", "x-admin", dev).
		must(t, 0, "is revoked", "service relay-x of org org-x is revoked")
	run(t, env, "gov", "account", "revoke", "relay-x", "--from", "x-admin", dev).must(t, 1, "rejected", "already revoked")
	run(t, env, "gov", "service", "list").must(t, 0, "revoked")

	run(t, env, "gov", "org", "expel", "--from", "gov-org-1", dev).must(t, 2)
	run(t, env, "gov", "org", "expel", "org-x", "--reason", "fraud", "--from", "x-admin", dev).must(t, 1, "rejected", "role operator")
	run(t, env, "gov", "org", "expel", "org-x", "--reason", "fraud", "--from", "gov-org-1", dev).must(t, 0, "proposal 3 opened: expel-org org-x")
	run(t, env, "gov", "vote", "3", "yes", "--from", "gov-org-1", dev).must(t, 0, "org org-x is expelled", "proposal 3 passed")
	run(t, env, "gov", "org", "show", "org-x").must(t, 0, "expelled")
	run(t, env, "gov", "subchain", "register", "chain-y", "--relay", "relay-x", "--from", "x-admin", dev).must(t, 1, "rejected", "revoked")

	// Bad input says what is wrong, never with a stack trace.
	run(t, env, "gov", "vote", "abc", "yes", "--from", "gov-org-1", dev).must(t, 2, "not a number")
	run(t, env, "gov", "vote", "1", "maybe", "--from", "gov-org-1", dev).must(t, 2, "yes or no")
	run(t, env, "gov", "org", "show", "org-none").must(t, 1, "org org-none does not exist")
	run(t, env, "gov", "pipe", "authorize", "p9", "--dest-contract", "c", "--from", "gov-org-1", dev).must(t, 1, "rejected: authorize-pipe p9: pipe p9 does not exist")
	run(t, env, "gov", "pipe", "apply", "p9", "--from", "gov-org-1", "--mode", "eventual", dev).must(t, 2, "--mode must be strict or optimistic")
	run(t, env, "gov", "pipe", "resume", "p9", dev).must(t, 2, "--from KEY is required")
	run(t, env, "gov", "service", "register", "relay-y", "--address", "nowhere", "--tls-fingerprint", fp, "--account", "relay-x", "--from", "gov-org-1", dev).must(t, 1, "is not host:port")
	run(t, env, "gov", "org", "list", "-o", "yaml").must(t, 2, "unknown output format")
	run(t, env, "gov", "account", "show", "zz").must(t, 2, "malformed address")
	run(t, []string{"CCGP_HOME=" + dir, "CCGP_NODE=127.0.0.1:1"}, "gov", "org", "list").must(t, 1, "cannot reach node")
	run(t, env, "node", "start", "--home", filepath.Join(dir, "nope")).must(t, 2, "node home")

	// Transaction control commands.
	run(t, env, "tx", "show", "nonsense").must(t, 2, "PIPE/SEQ")
	run(t, env, "tx", "show", "pipe-x/0").must(t, 2, "from 1")
	run(t, env, "tx", "show", "pipe-x/1").must(t, 0, "unknown to the chain", "proven")
	run(t, env, "tx", "ledger", "--pipe", "pipe-x", "--from", "5", "--to", "1").must(t, 2, "--from")
	run(t, env, "tx", "ledger", "--pipe", "pipe-x").must(t, 0, "nothing anchored")
	run(t, env, "manual", "list").must(t, 0, "no packets wait")
	run(t, env, "manual", "resolve", "p/1", "--action", "ignore", "--from", "gov-org-1", dev).must(t, 2, "--action must be")
	run(t, env, "manual", "resolve", "p/1", "--action", "retry", "--from", "gov-org-1", dev).must(t, 1, "rejected: resolve: pipe p does not exist")
	run(t, env, "gov", "pipe", "mode", "p", "eventual", "--from", "gov-org-1", dev).must(t, 2, "strict or optimistic")
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProc runs the binary in the background; t.Cleanup interrupts it and
// checks that it exits cleanly.
func startProc(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(ccgpBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v exited with %v\n%s", args, err, se.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%v did not stop on SIGINT\n%s", args, se.String())
		}
	})
	return cmd
}

func TestCLIRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node, a broker and a relay")
	}
	dir := filepath.Join(t.TempDir(), "net")
	dev := "--insecure-dev-keys"
	env := []string{"CCGP_HOME=" + dir}
	run(t, env, "testnet", "--validators", "1", "--out", dir, "--base-port", "0", dev).must(t, 0, "development CA")
	var tn struct{ Nodes []struct{ Home, RPC string } }
	b, _ := os.ReadFile(filepath.Join(dir, "testnet.json"))
	if err := json.Unmarshal(b, &tn); err != nil {
		t.Fatal(err)
	}
	startProc(t, nil, "node", "start", "--home", tn.Nodes[0].Home, "--log-level", "error")
	kafka := freeTCP(t)
	startProc(t, nil, "kafka", "dev", "--listen", kafka)
	env = append(env, "CCGP_NODE="+tn.Nodes[0].RPC, "CCGP_GENESIS="+filepath.Join(tn.Nodes[0].Home, "config", "genesis.json"))
	deadline := time.Now().Add(30 * time.Second)
	for run(t, env, "gov", "params").code != 0 {
		if time.Now().After(deadline) {
			t.Fatal("node did not come up")
		}
		time.Sleep(200 * time.Millisecond)
	}

	out := filepath.Join(t.TempDir(), "relay-1")
	quic := freeUDP(t)
	initOut := run(t, env, "relay", "init", "relay-1", "--ca", filepath.Join(dir, "ca"), "--listen", quic, "--chain", "chain-1",
		"--out", out, "--governance", tn.Nodes[0].RPC, "--governance-genesis", filepath.Join(tn.Nodes[0].Home, "config", "genesis.json"), dev).must(t, 0, "wrote", "gov service register relay-1")
	fp := regexp.MustCompile(`--tls-fingerprint ([0-9a-f]{64})`).FindStringSubmatch(initOut.stdout)
	if fp == nil {
		t.Fatalf("relay init printed no fingerprint: %s", initOut.stdout)
	}
	// Register it as the printed instructions say.
	run(t, env, "gov", "account", "propose", "--role", "cross-chain", "--key", "relay-1", "--from", "gov-org-1", dev).must(t, 0, "proposal 1 opened")
	run(t, env, "gov", "vote", "1", "yes", "--from", "gov-org-1", dev).must(t, 0, "passed")
	run(t, env, "gov", "service", "register", "relay-1", "--address", quic, "--tls-fingerprint", fp[1], "--account", "relay-1", "--from", "gov-org-1", dev).must(t, 0)

	cfg := filepath.Join(out, "relay.yaml")
	run(t, env, "relay", "start", "--config", cfg, dev).must(t, 2, "no Kafka brokers")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("relay_id: x\nsurprise: 1\n"), 0o644)
	run(t, env, "relay", "start", "--config", bad, dev).must(t, 2, "field surprise not found")
	os.WriteFile(bad, []byte("relay_id: x\n"), 0o644)
	run(t, env, "relay", "start", "--config", bad, dev).must(t, 2, "missing chain.dir, chain.id, chain.kind")
	// Without a trust root for governance reads the relay does not start.
	good, _ := os.ReadFile(cfg)
	var kept []string
	for _, l := range strings.Split(string(good), "\n") {
		if !strings.HasPrefix(l, "governance_genesis:") {
			kept = append(kept, l)
		}
	}
	unanchored := filepath.Join(out, "unanchored.yaml")
	os.WriteFile(unanchored, []byte(strings.Join(kept, "\n")), 0o644)
	run(t, env, "relay", "start", "--config", unanchored, "--kafka", "127.0.0.1:1", dev).must(t, 2, "no governance trust root")

	// A chain app without its key, and with a key the keystore lacks.
	withApp := func(name, app string) string {
		p := filepath.Join(out, name)
		os.WriteFile(p, bytes.Replace(good, []byte("chain:\n"), []byte("chain:\n  app:\n"+app), 1), 0o644)
		return p
	}
	run(t, env, "relay", "start", "--config", withApp("nokey.yaml", "    pipe: p1\n    total: 5\n"), "--kafka", kafka, dev).
		must(t, 2, "chain.app.pipe and chain.app.key")
	run(t, env, "relay", "start", "--config", withApp("badkey.yaml", "    pipe: p1\n    total: 5\n    key: nobody\n"), "--kafka", kafka, dev).
		must(t, 1, "chain.app.key", "nobody")

	metrics := freeTCP(t)
	cfgB, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(cfgB, []byte(`metrics: ""`), []byte("metrics: "+metrics), 1), 0o644)
	startProc(t, env, "relay", "start", "--config", cfg, "--kafka", kafka, dev, "--log-level", "warn")
	deadline = time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "ccgp_") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay metrics never served: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
