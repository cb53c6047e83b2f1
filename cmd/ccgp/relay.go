package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.yaml.in/yaml/v3"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/relay"
)

// relayFile is relay.yaml. Relative paths are relative to the file.
type relayFile struct {
	RelayID    string `yaml:"relay_id"`
	Key        string `yaml:"key"`  // signing key name in the keystore
	Home       string `yaml:"home"` // keystore home; default --home
	Governance string `yaml:"governance"`
	// GovernanceGenesis (the chain's genesis.json) or GovernanceTrust
	// anchors every governance read (one is required).
	GovernanceGenesis string `yaml:"governance_genesis"`
	GovernanceTrust   struct {
		ChainID string `yaml:"chain_id"`
		Height  int64  `yaml:"height"`
		Hash    string `yaml:"hash"`
	} `yaml:"governance_trust"`
	Kafka  []string `yaml:"kafka"`
	Topic  string   `yaml:"topic"`
	Listen string   `yaml:"listen"`
	TLS    struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	DataDir string `yaml:"data_dir"`
	Shards  int    `yaml:"shards"`
	Metrics string `yaml:"metrics"` // host:port for /metrics and /debug/pprof
	Chain   struct {
		Kind          string        `yaml:"kind"`
		ID            string        `yaml:"id"`
		Dir           string        `yaml:"dir"`
		BlockInterval time.Duration `yaml:"block_interval"`
		FinalityDepth int           `yaml:"finality_depth"`
		// App is a business app on the simulated chain that sends
		// requests on its own (demos and fault tests of a relay process).
		App struct {
			Pipe  string  `yaml:"pipe"`
			Key   string  `yaml:"key"`   // the app's key in the keystore (the pipe's source key)
			Total uint64  `yaml:"total"` // stop once the pipe holds this many requests (0: none sent)
			Rate  float64 `yaml:"rate"`  // requests per second, default 100
		} `yaml:"app"`
	} `yaml:"chain"`
}

func loadRelayFile(path string) (*relayFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("relay config: %v", err)
	}
	var f relayFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, usagef("relay config %s: %v", path, err)
	}
	base := filepath.Dir(path)
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for _, p := range []*string{&f.Home, &f.TLS.CA, &f.TLS.Cert, &f.TLS.Key, &f.DataDir, &f.Chain.Dir, &f.GovernanceGenesis} {
		rel(p)
	}
	var missing []string
	for name, v := range map[string]string{"relay_id": f.RelayID, "governance": f.Governance, "listen": f.Listen,
		"tls.ca": f.TLS.CA, "tls.cert": f.TLS.Cert, "tls.key": f.TLS.Key, "data_dir": f.DataDir,
		"chain.kind": f.Chain.Kind, "chain.id": f.Chain.ID, "chain.dir": f.Chain.Dir} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, usagef("relay config %s: missing %s", path, strings.Join(missing, ", "))
	}
	if f.GovernanceGenesis == "" && f.GovernanceTrust.Height == 0 {
		return nil, usagef("relay config %s: no governance trust root: set governance_genesis (the chain's genesis.json) or governance_trust {chain_id, height, hash}", path)
	}
	if f.Chain.Kind != "simchain" {
		return nil, usagef("relay config %s: chain.kind %q is not supported (supported: simchain)", path, f.Chain.Kind)
	}
	if f.Key == "" {
		f.Key = f.RelayID
	}
	if a := f.Chain.App; a.Total > 0 && (a.Pipe == "" || a.Key == "") {
		return nil, usagef("relay config %s: chain.app sends %d requests: it needs chain.app.pipe and chain.app.key (the pipe's source key in the keystore)", path, a.Total)
	}
	if f.Chain.App.Rate < 0 {
		return nil, usagef("relay config %s: chain.app.rate %v: must be positive (requests per second)", path, f.Chain.App.Rate)
	}
	if f.Shards < 0 || f.Shards > 64 {
		return nil, usagef("relay config %s: shards must be 1-64", path)
	}
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		return nil, usagef("relay config %s: listen %q: %v", path, f.Listen, err)
	}
	return &f, nil
}

func newRelayCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "relay", Short: "Run and set up a relay"}
	var cfgPath, kafkaFlag string
	start := &cobra.Command{
		Use:   "start",
		Short: "Run one relay: listener, router shards, QUIC mesh endpoint, delivery",
		Long: `Run one organisation's relay from relay.yaml: the subchain listener feeding
Kafka, the router shards, the QUIC mesh endpoint (mutual TLS) and delivery
into the subchain. It runs until SIGINT or SIGTERM. Make a relay.yaml with
'ccgp relay init'.`,
		Example: "  ccgp relay start --config ./relay-org-1/relay.yaml --kafka 127.0.0.1:9092",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			f, err := loadRelayFile(cfgPath)
			if err != nil {
				return err
			}
			if kafkaFlag != "" {
				f.Kafka = strings.Split(kafkaFlag, ",")
			}
			if len(f.Kafka) == 0 {
				return usagef("no Kafka brokers: set kafka: in %s or pass --kafka host:port,... (for development: 'ccgp kafka dev')", cfgPath)
			}
			gg := *g
			if f.Home != "" {
				gg.home = f.Home
			}
			signer, err := gg.signer(f.Key)
			if err != nil {
				return err
			}
			cert, pool, err := loadTLS(f.TLS.Cert, f.TLS.Key, f.TLS.CA)
			if err != nil {
				return err
			}
			log := g.logger()
			ctx := c.Context()
			gt := f.GovernanceTrust
			trust, err := trustOptions(f.GovernanceGenesis, gt.ChainID, gt.Height, gt.Hash)
			if err != nil {
				return err
			}
			gov, err := govchain.Dial(ctx, f.Governance, append(trust, govchain.WithLogger(log))...)
			if err != nil {
				return err
			}
			ch, err := simchain.Open(f.Chain.Dir, simchain.Options{ID: f.Chain.ID, BlockInterval: f.Chain.BlockInterval,
				FinalityDepth: f.Chain.FinalityDepth, Logger: log.With("chain", f.Chain.ID)})
			if err != nil {
				return err
			}
			defer ch.Close()
			if a := f.Chain.App; a.Pipe != "" && a.Total > 0 {
				appKey, err := gg.signer(a.Key)
				if err != nil {
					return fmt.Errorf("chain.app.key: %w", err)
				}
				actx, stop := context.WithCancel(ctx)
				defer stop()
				go runChainApp(actx, &simchain.App{Chain: ch, Signer: appKey, Pipe: a.Pipe}, a.Total, a.Rate, log)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			r, err := relay.New(ctx, relay.Config{RelayID: f.RelayID, Signer: signer, Chain: ch, Gov: gov, Brokers: f.Kafka,
				Topic: f.Topic, ListenAddr: f.Listen, Certificate: cert, CAs: pool, DataDir: f.DataDir, Shards: f.Shards,
				Logger: log, Metrics: reg})
			if err != nil {
				return err
			}
			if f.Metrics != "" {
				srv, err := serveMetrics(f.Metrics, reg)
				if err != nil {
					r.Close()
					return err
				}
				defer srv.Close()
			}
			fp := r.Fingerprint()
			log.Info("relay running", "relay", f.RelayID, "quic", r.Addr(), "tls_sha256", hex.EncodeToString(fp[:]), "kafka", f.Kafka)
			return r.Run(ctx)
		},
	}
	start.Flags().StringVar(&cfgPath, "config", "relay.yaml", "relay configuration file")
	start.Flags().StringVar(&kafkaFlag, "kafka", "", "Kafka brokers host:port,... (overrides the config)")

	var caDir, listen, chainID, out, govAddr, govGenesis string
	initCmd := &cobra.Command{
		Use:   "init RELAY_ID",
		Short: "Make a relay's key, TLS certificate and relay.yaml",
		Long: `Make what a relay needs: its signing key (in HOME/keys, named RELAY_ID, unless
it exists), a TLS certificate issued by the development CA of 'ccgp testnet'
(--ca), and OUT/relay.yaml. It prints the governance txs that register the
relay and its subchain.`,
		Example: "  ccgp relay init relay-org-1 --home ./net --ca ./net/ca --listen 127.0.0.1:7101 --chain chain-org-1 --out ./relay-org-1 --insecure-dev-keys",
		Args:    exactArgs("RELAY_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			id := args[0]
			if out == "" || caDir == "" || chainID == "" || govGenesis == "" {
				return usagef("--out, --ca, --chain and --governance-genesis are required")
			}
			if _, err := govchain.TrustRootFromGenesis(govGenesis); err != nil {
				return usagef("--governance-genesis: %v", err)
			}
			govGenesis, _ = filepath.Abs(govGenesis)
			if _, _, err := net.SplitHostPort(listen); err != nil {
				return usagef("--listen %q: %v", listen, err)
			}
			ca, err := crypto.LoadCA(caDir)
			if err != nil {
				return err
			}
			ks, err := g.keystore(true)
			if err != nil {
				return err
			}
			ki, err := ks.Show(id)
			if errors.Is(err, crypto.ErrKeyNotFound) {
				ki, err = ks.Add(id)
			}
			if err != nil {
				return err
			}
			host, _, _ := net.SplitHostPort(listen)
			cert, err := ca.Issue(id, []string{host})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			if err := crypto.SaveCertificate(filepath.Join(out, "relay.crt"), filepath.Join(out, "relay.key"), cert); err != nil {
				return err
			}
			home, _ := filepath.Abs(g.home)
			caCrt, _ := filepath.Abs(filepath.Join(caDir, "ca.crt"))
			cfg := fmt.Sprintf(`# relay %s — made by 'ccgp relay init'
relay_id: %s
key: %s
home: %s
governance: %s
governance_genesis: %s   # the trust root of every governance read
kafka: []            # or pass --kafka to 'ccgp relay start'
topic: ccgp.events.%s
listen: %s
tls: {ca: %s, cert: relay.crt, key: relay.key}
data_dir: data
shards: 1
metrics: ""          # host:port for /metrics and /debug/pprof
chain:
  kind: simchain
  id: %s
  dir: chain
  block_interval: 50ms
  finality_depth: 2
`, id, id, id, home, govAddr, govGenesis, id, listen, caCrt, chainID)
			path := filepath.Join(out, "relay.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				return err
			}
			fp := crypto.Fingerprint(cert)
			fmt.Printf("wrote %s\nrelay key %s (address %s)\nTLS certificate SHA-256 %x\n\n", path, id, ki.Address, fp)
			fmt.Printf("register it (an operator of your org, after the account is voted in):\n")
			fmt.Printf("  ccgp gov account propose --role cross-chain --key %s --from ADMIN\n", id)
			fmt.Printf("  ccgp gov service register %s --address %s --account %s --tls-fingerprint %x --from ADMIN\n", id, listen, id, fp)
			fmt.Printf("  ccgp gov subchain register %s --relay %s --from ADMIN\n", chainID, id)
			return nil
		},
	}
	initCmd.Flags().StringVar(&caDir, "ca", "", "development CA directory (OUT/ca of 'ccgp testnet')")
	initCmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7101", "QUIC host:port the relay listens on")
	initCmd.Flags().StringVar(&chainID, "chain", "", "the subchain id this relay serves")
	initCmd.Flags().StringVar(&out, "out", "", "directory for relay.yaml, the certificate and the relay's state")
	initCmd.Flags().StringVar(&govAddr, "governance", "127.0.0.1:26657", "RPC address of a governance node")
	initCmd.Flags().StringVar(&govGenesis, "governance-genesis", "", "the governance chain's genesis.json (e.g. NET/validator0/config/genesis.json): the trust root")
	cmd.AddCommand(start, initCmd)
	return cmd
}

func loadTLS(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return cert, nil, fmt.Errorf("relay TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return cert, nil, fmt.Errorf("relay TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return cert, nil, fmt.Errorf("relay TLS CA %s holds no PEM certificate", caFile)
	}
	return cert, pool, nil
}

// serveMetrics exposes Prometheus metrics and pprof on addr.
func serveMetrics(addr string, reg *prometheus.Registry) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

func newKafkaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "kafka", Short: "Development Kafka broker"}
	var listen string
	var partitions int
	var retention time.Duration
	dev := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded Kafka broker (kfake) for development, until interrupted",
		Long: `Run franz-go's kfake broker in this process: enough Kafka for relays on one
machine. Topics are created on first use. Production uses a real cluster
(--kafka on every command).`,
		Example: "  ccgp kafka dev --listen 127.0.0.1:9092",
		Args:    exactArgs(),
		RunE: func(c *cobra.Command, args []string) error {
			_, portS, err := net.SplitHostPort(listen)
			if err != nil {
				return usagef("--listen %q: %v", listen, err)
			}
			var port int
			if _, err := fmt.Sscan(portS, &port); err != nil {
				return usagef("--listen %q: bad port", listen)
			}
			if retention < time.Second {
				return usagef("--retention %v: at least 1s (records are dropped once older)", retention)
			}
			kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation(),
				kfake.DefaultNumPartitions(partitions),
				// Retention drops whole segments (100 MiB per partition by
				// default): smaller ones let it free memory.
				kfake.BrokerConfigs(map[string]string{"log.retention.ms": fmt.Sprint(retention.Milliseconds()),
					"log.segment.bytes": fmt.Sprint(16 << 20)}))
			if err != nil {
				return err
			}
			defer kc.Close()
			fmt.Fprintf(os.Stderr, "kfake broker at %v, records kept %v (Ctrl-C stops)\n", kc.ListenAddrs(), retention)
			defer bench.ApplyRetentionEvery(kc, min(retention/4, 10*time.Second))()
			<-c.Context().Done()
			return nil
		},
	}
	dev.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "broker address")
	dev.Flags().IntVar(&partitions, "partitions", 8, "partitions of auto-created topics")
	dev.Flags().DurationVar(&retention, "retention", time.Hour, "drop records older than this (the broker is in memory: this bounds its size)")
	cmd.AddCommand(dev)
	return cmd
}

// runChainApp sends requests on app's pipe at rate per second until the
// pipe holds total (counted on the chain, so a restarted process goes on
// where the last stopped) or ctx ends.
func runChainApp(ctx context.Context, app *simchain.App, total uint64, rate float64, log *slog.Logger) {
	if rate <= 0 {
		rate = 100
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		n := app.Chain.NextSequence(app.Pipe) - 1
		if n >= total {
			log.Info("chain app done", "pipe", app.Pipe, "requests", n)
			return
		}
		if _, err := app.Send(ctx, fmt.Appendf(nil, `{"request":%d}`, n+1)); err != nil {
			if ctx.Err() == nil {
				log.Warn("chain app: request not sent", "pipe", app.Pipe, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
