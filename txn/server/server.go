// Package server runs kvtx's processes: it turns a txn.Config into a listening master or node
// (data directory identity check, Badger, protocol server, metrics endpoint, background
// recovery) and shuts it down cleanly. It supplies what the txn protocol leaves to its
// deployment: YAML config files, the Prometheus metrics, the transaction-log file and the
// Badger decision log. The binaries in cmd only bind flags to it, and the end-to-end tests
// start the same code as real processes.
package server

import (
	"context"
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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/certs"
	"github.com/kvtx/kvtx/wire"
)

// Options are the process-level settings that are not part of the cluster config.
type Options struct {
	// Logger receives the process's log lines (default slog.Default()).
	Logger *slog.Logger
	// PprofListen, if set, is a loopback address on which /debug/pprof is served, on a
	// listener of its own (off by default: profiles and traces are not for the network).
	PprofListen string
	// Hooks are called at the protocol's named points (none by default).
	Hooks txn.Hooks
	// Insecure serves and dials without TLS, trusting every peer's claimed role (logged at
	// WARN). By default every link is mutual TLS with the certificates of Config.TLS, and a
	// process whose own certificate is missing or invalid does not start.
	Insecure bool
}

// IdentityFile names the file in a data directory that records which process owns it.
const IdentityFile = "IDENTITY"

// claimDataDir creates dir if needed and makes sure it belongs to identity.
func claimDataDir(dir, identity string) error {
	if err := kv.MakeDurableDir(dir); err != nil {
		return fmt.Errorf("server: create data directory: %w", err)
	}
	path := filepath.Join(dir, IdentityFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		have := strings.TrimSpace(string(data))
		if have != identity {
			return fmt.Errorf("server: data directory %s belongs to %q, not %q", dir, have, identity)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		entries, _ := os.ReadDir(dir)
		entries = slices.DeleteFunc(entries, func(e os.DirEntry) bool {
			return e.Name() == IdentityFile+".tmp" // a first start cut short while writing it
		})
		if len(entries) > 0 {
			return fmt.Errorf("server: data directory %s is not empty and has no %s file: not a kvtx data directory", dir, IdentityFile)
		}
		if err := kv.WriteFileDurably(path, []byte(identity+"\n"), 0o644); err != nil {
			return fmt.Errorf("server: write identity: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("server: read identity: %w", err)
	}
}

// listeners opens the protocol, metrics and (if pprofAddr is set) pprof listeners, so that a
// port in use fails before anything is served.
func listeners(p txn.Process, pprofAddr string) (l, ml, pl net.Listener, err error) {
	if pprofAddr != "" {
		if err := CheckLoopback(pprofAddr); err != nil {
			return nil, nil, nil, err
		}
	}
	defer func() {
		if err != nil {
			for _, x := range []net.Listener{l, ml} {
				if x != nil {
					x.Close()
				}
			}
		}
	}()
	if l, err = net.Listen("tcp", p.Listen); err != nil {
		return nil, nil, nil, fmt.Errorf("server: listen on %s: %w", p.Listen, err)
	}
	if p.Metrics != "" {
		if ml, err = net.Listen("tcp", p.Metrics); err != nil {
			return nil, nil, nil, fmt.Errorf("server: metrics listen on %s: %w", p.Metrics, err)
		}
	}
	if pprofAddr != "" {
		if pl, err = net.Listen("tcp", pprofAddr); err != nil {
			return nil, nil, nil, fmt.Errorf("server: pprof listen on %s: %w", pprofAddr, err)
		}
	}
	return l, ml, pl, nil
}

// CheckLoopback refuses an address whose host is not a loopback address: profiles and traces
// are for whoever can log in to the machine, not for the network.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("server: pprof address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("server: pprof address %q: the host must be a loopback address (127.0.0.1, ::1 or localhost)", addr)
	}
	return nil
}

// handler adapts a txn.Handler to the wire server: it refuses what the peer's role may not
// send (rules), then decodes the body into its message type.
func handler(self string, rules acl, h txn.Handler) wire.Handler {
	return wire.HandlerFunc(func(ctx context.Context, req *wire.Request) (wire.Message, error) {
		if err := rules.allow(self, req.Peer, req.Type); err != nil {
			return nil, err
		}
		m := wire.NewMessage(req.Type)
		if m == nil {
			return nil, wire.Errorf(wire.CodeUnknownMessage, "unknown message type %d", req.Type)
		}
		if err := req.Decode(m); err != nil {
			return nil, err
		}
		return h.Handle(ctx, m)
	})
}

// process is what a master and a node share: the protocol server, the metrics server and
// the order in which they stop.
type process struct {
	log      *slog.Logger
	certs    *certs.Loader // nil with Options.Insecure
	srv      *wire.Server
	addr     net.Addr
	metrics  *http.Server
	maddr    net.Addr
	pprof    *http.Server // nil unless Options.PprofListen
	serveErr chan error
	cancel   context.CancelFunc
	bg       sync.WaitGroup
	closers  []func() error

	// metricsTLS serves the metrics over TLS with certs (Config.TLS.Metrics, unless insecure).
	metricsTLS bool
}

func (p *process) start(l, ml, pl net.Listener, h txn.Handler, rules acl, reg *prometheus.Registry, cfg wire.ServerConfig, opts Options) {
	sm := newServerMetrics(reg)
	cfg.Observer = sm
	cfg.Logger = p.log
	serverTLS(&cfg, p.certs)
	p.srv = wire.NewServer(handler(cfg.Name, rules, h), cfg)
	registerInFlight(reg, p.srv, cfg.MaxBytesInFlight)
	p.addr = l.Addr()
	p.serveErr = make(chan error, 3)
	go func() { p.serveErr <- p.srv.Serve(l) }()
	if p.certs != nil {
		reg.MustRegister(&certExpiryCollector{certs: p.certs})
	}
	if ml != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		// A scrape is one small request and reply: a client that sends or reads slower than
		// this is not Prometheus. The read timeouts bound the TLS handshake too.
		p.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn)}
		p.maddr = ml.Addr()
		if p.metricsTLS {
			ml = metricsTLSListener(ml, p.certs.ServerConfig())
		}
		p.serveHTTP(p.metrics, ml)
	}
	if pl != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		// A CPU profile or trace takes its ?seconds= (at most a few minutes here) to write.
		p.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Minute, MaxHeaderBytes: 16 << 10}
		p.log.Warn("serving /debug/pprof", "listen", pl.Addr().String())
		p.serveHTTP(p.pprof, pl)
	}
}

// serveHTTP serves srv on l until it is shut down; any other end is reported on serveErr.
func (p *process) serveHTTP(srv *http.Server, l net.Listener) {
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.serveErr <- err
		}
	}()
}

// Addr is the protocol listener's address.
func (p *process) Addr() net.Addr { return p.addr }

// MetricsAddr is the metrics listener's address (nil when disabled).
func (p *process) MetricsAddr() net.Addr { return p.maddr }

// Done delivers an error if a server stops unexpectedly.
func (p *process) Done() <-chan error { return p.serveErr }

// Shutdown stops serving (letting in-flight requests finish), stops background work and
// closes storage.
func (p *process) Shutdown(ctx context.Context) error {
	var errs []error
	if err := p.srv.Shutdown(ctx); err != nil && !errors.Is(err, wire.ErrServerClosed) {
		errs = append(errs, err)
	}
	for _, h := range []*http.Server{p.metrics, p.pprof} {
		if h != nil {
			h.Shutdown(ctx)
		}
	}
	p.cancel()
	p.bg.Wait()
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *process) closeAll() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// Master is a running master process.
type Master struct {
	process
	Coordinator *txn.Coordinator
}

// StartMaster validates cfg, claims the master's data directory, opens the decision log,
// listens, recovers every committed transaction and starts serving.
func StartMaster(ctx context.Context, cfg txn.Config, opts Options) (_ *Master, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("process", txn.MasterName)
	cl, err := processCerts(cfg, txn.MasterName, opts.Insecure, log)
	if err != nil {
		return nil, err
	}
	m := &Master{process: process{log: log, certs: cl, metricsTLS: metricsOverTLS(cfg, cl, log)}}
	defer func() {
		if err != nil {
			m.closeAll()
		}
	}()
	if err := claimDataDir(cfg.Master.DataDir, "master"); err != nil {
		return nil, err
	}
	l, ml, pl, err := listeners(cfg.Master, opts.PprofListen)
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, func() error { l.Close(); return nil })
	for _, x := range []net.Listener{ml, pl} {
		if x != nil {
			m.closers = append(m.closers, func() error { x.Close(); return nil })
		}
	}
	reg := newRegistry()
	metrics := newMasterMetrics(reg)
	store, err := openDecisionStore(filepath.Join(cfg.Master.DataDir, "db"), metrics.observeFsync)
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, store.Close)
	tlog, err := openTxnLog(cfg.Master.DataDir, txnLogMaxBytes)
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, tlog.Close)
	shards := cfg.ShardMap()
	addrs := map[string]string{}
	for _, n := range cfg.Nodes {
		addrs[n.Name] = n.DialAddr()
	}
	tr := txn.NewWireTransport(addrs, wire.DialOptions{Role: "master", Name: txn.MasterName, ClusterID: shards.ID(), MaxFrame: cfg.Limits.MaxFrameBytes}, transportTLS(cl))
	tr.WarnIfAdmitsLess(cfg.Limits.MaxInFlightBytes, log)
	m.closers = append(m.closers, tr.Close)
	dir := map[string]txn.Process{txn.MasterName: cfg.Master}
	for _, n := range cfg.Nodes {
		dir[n.Name] = n
	}
	coord, err := txn.NewCoordinator(ctx, txn.CoordinatorConfig{
		Shards: shards, Transport: tr, Decisions: store, Limits: cfg.Limits, Timeouts: cfg.Timeouts,
		Metrics: metrics, TxnLog: tlog, Logger: log, Directory: dir, Hooks: opts.Hooks,
		Parallel: cfg.CommitProtocol == txn.ProtocolParallel, GCRetention: gcRetention(cfg.GC),
	})
	if err != nil {
		return nil, err
	}
	m.Coordinator = coord
	metrics.watch(coord.InFlight)
	metrics.watchSafePoint(coord.SafePoint, coord.SafePointAge)
	m.closers = append(m.closers, func() error { coord.Close(); return nil })
	n, err := coord.Recover(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.CommitProtocol == txn.ProtocolParallel {
		// A commit the participants settled while the master was down may sit above the
		// oracle's persisted mark: start above every node's highest timestamp. That is not
		// needed for consistency (txn/README.md, parallel commit), so a node that is down now
		// is waited for a while only.
		lctx, cancel := context.WithTimeout(ctx, cfg.Timeouts.Request)
		if missing := coord.LearnTimestamps(lctx); len(missing) > 0 {
			log.Warn("could not learn the highest timestamp of some nodes", "nodes", missing)
		}
		cancel()
	}
	gcCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go coord.RunGC(gcCtx)
	m.start(l, ml, pl, coord, masterACL, reg, wire.ServerConfig{Name: txn.MasterName, MaxFrame: cfg.Limits.MaxFrameBytes,
		MaxBytesInFlight: cfg.Limits.MaxInFlightBytes, Trusted: clusterPeer}, opts)
	log.Info("master serving", "listen", m.Addr().String(), "advertise", cfg.Master.DialAddr(), "metrics", cfg.Master.Metrics, "data_dir", cfg.Master.DataDir,
		"nodes", len(cfg.Nodes), "recovered_decisions", n, "commit_protocol", cfg.CommitProtocol, "tls", cl != nil, "metrics_tls", m.metricsTLS)
	return m, nil
}

// Node is a running node process.
type Node struct {
	process
	Participant *txn.Participant
	Store       *kv.Store
}

// StartNode validates cfg, claims the node's data directory, opens its shard (rebuilding
// locks from prepare records), listens, starts serving and starts resolving prepared
// transactions with the master.
func StartNode(ctx context.Context, cfg txn.Config, name string, opts Options) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	self, err := cfg.Node(name)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("process", name)
	cl, err := processCerts(cfg, name, opts.Insecure, log)
	if err != nil {
		return nil, err
	}
	n := &Node{process: process{log: log, certs: cl, metricsTLS: metricsOverTLS(cfg, cl, log)}}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	if err := claimDataDir(self.DataDir, "node "+name); err != nil {
		return nil, err
	}
	l, ml, pl, err := listeners(self, opts.PprofListen)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() error { l.Close(); return nil })
	for _, x := range []net.Listener{ml, pl} {
		if x != nil {
			n.closers = append(n.closers, func() error { x.Close(); return nil })
		}
	}
	reg := newRegistry()
	var store *kv.Store
	// The gauges read the store at scrape time: the metrics endpoint starts after it opens.
	metrics := newNodeMetrics(reg, func() nodeGauges {
		st := store.Stats()
		g := nodeGauges{locks: st.LocksHeld, prepared: st.Prepared, lsmBytes: st.LSMBytes, vlogBytes: st.VlogBytes, safePoint: store.SafePoint(), discarded: st.Discarded,
			usedBytes: st.DiskBytes, quotaBytes: st.QuotaBytes, noSpace: st.SpaceAlarm}
		for _, t := range store.Prepared() {
			g.oldestPrepared = max(g.oldestPrepared, time.Since(t.PreparedAt))
		}
		return g
	})
	store, err = kv.Open(kv.Options{
		Dir: filepath.Join(self.DataDir, "db"), LockWait: cfg.Timeouts.LockWait, Logger: log,
		MaxReadBytes: cfg.Limits.MaxFrameBytes - 64<<10, // a reply must fit in a frame
		OnSync:       metrics.observeFsync,
		QuotaBytes:   cfg.Storage.Quota(), ReclaimEvery: cfg.GC.Retention,
		MemoryBytes: cfg.Storage.MemoryBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("server: open shard: %w", err)
	}
	n.Store = store
	n.closers = append(n.closers, store.Close)
	tlog, err := openTxnLog(self.DataDir, txnLogMaxBytes)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, tlog.Close)
	shards := cfg.ShardMap()
	// One transport reaches the master and the other nodes (the parallel protocol's
	// participants settle transactions among themselves).
	addrs := map[string]string{txn.MasterName: cfg.Master.DialAddr()}
	for _, p := range cfg.Nodes {
		if p.Name != name {
			addrs[p.Name] = p.DialAddr()
		}
	}
	tr := txn.NewWireTransport(addrs, wire.DialOptions{Role: "node", Name: name, ClusterID: shards.ID(), MaxFrame: cfg.Limits.MaxFrameBytes}, transportTLS(cl))
	n.closers = append(n.closers, tr.Close)
	part, err := txn.NewParticipant(txn.ParticipantConfig{
		Name: name, Shards: shards, Store: store, Master: tr, Limits: cfg.Limits, Timeouts: cfg.Timeouts,
		Metrics: metrics, TxnLog: tlog, Logger: log, Hooks: opts.Hooks,
	})
	if err != nil {
		return nil, err
	}
	n.Participant = part
	for _, t := range store.Prepared() {
		tlog.Event(t.TxnID, "recovered", t.Participants, "state=prepared")
		log.Info("recovered prepared transaction", "txn", t.TxnID, "participants", t.Participants)
	}
	bgCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.start(l, ml, pl, part, nodeACL, reg, wire.ServerConfig{Name: name, ClusterID: shards.ID(), MaxFrame: cfg.Limits.MaxFrameBytes,
		MaxBytesInFlight: cfg.Limits.MaxInFlightBytes, Trusted: clusterPeer}, opts)
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		part.Run(bgCtx)
	}()
	log.Info("node serving", "listen", n.Addr().String(), "advertise", self.DialAddr(), "metrics", self.Metrics, "data_dir", self.DataDir,
		"shard", fmt.Sprintf("%d/%d", indexOf(shards.Names(), name)+1, shards.Len()), "prepared", len(store.Prepared()), "tls", cl != nil, "metrics_tls", n.metricsTLS,
		"memory_bytes", cfg.Storage.MemoryBytes)
	return n, nil
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

// nodeHeadroomBytes is what a node's Go soft memory limit allows beyond its storage budget: the
// requests in flight, the lock table and the transaction bookkeeping, the metrics, the runtime.
const nodeHeadroomBytes = 32 << 20

// NodeMemoryLimit is the Go soft memory limit (debug.SetMemoryLimit) for a node process of cfg:
// its storage budget plus 32 MiB. Badger frees its memory in large pieces (a flushed memtable, a
// built table) that the garbage collector, paced by GOGC alone, collects only once the heap has
// grown by a fraction of what is live, and that are returned to the system later still; near
// the limit the runtime collects and returns them at once. It is soft: a node that needs more
// gets more, at the cost of collecting more often.
func NodeMemoryLimit(cfg txn.Config) int64 {
	return cfg.WithDefaults().Storage.MemoryBytes + nodeHeadroomBytes
}

// gcRetention is the coordinator's GC retention for cfg: zero when GC is off.
func gcRetention(cfg txn.GC) time.Duration {
	if cfg.Off {
		return 0
	}
	return cfg.Retention
}
