package txn

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kvtx/kvtx/kv"
)

// Process describes one process of the cluster: where it listens for the kvtx protocol, where
// the other processes and clients dial it, where it serves Prometheus metrics and where it
// keeps its data.
type Process struct {
	// Name identifies a node ("node1"); the master's name is always "master".
	Name string `yaml:"name,omitempty"`
	// Listen is the host:port the process binds for the kvtx protocol. A wildcard host
	// (0.0.0.0, ::, or none, as in ":9001") binds every interface, and then Advertise is
	// required: nobody can dial a wildcard address from another machine.
	Listen string `yaml:"listen"`
	// Advertise is the host:port the other processes and clients dial to reach this one
	// (default Listen): the address of its machine or container when Listen is a wildcard, a
	// port that NAT or a container runtime forwards, a proxy. The master dials the nodes at
	// theirs, the nodes dial the master and each other at theirs, kvctl --config dials the
	// master's, and kvctl cert init puts its host among the certificate's names.
	Advertise string `yaml:"advertise,omitempty"`
	// Metrics is the host:port of the HTTP server for /metrics; empty disables it.
	Metrics string `yaml:"metrics"`
	// DataDir holds the process's Badger files, identity file and transaction log.
	DataDir string `yaml:"data_dir"`
}

// DialAddr returns the address at which the other processes and clients reach p: Advertise,
// or Listen when Advertise is empty.
func (p Process) DialAddr() string {
	if p.Advertise != "" {
		return p.Advertise
	}
	return p.Listen
}

// IsWildcardHost reports whether host (of a host:port) binds every interface: empty, 0.0.0.0
// or :: (any unspecified IP address).
func IsWildcardHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// Limits bound what one request may carry. A zero field means the default given in its comment.
type Limits struct {
	// MaxKeyBytes is the largest key (default 4 KiB).
	MaxKeyBytes int `yaml:"max_key_bytes"`
	// MaxValueBytes is the largest value (default 1 MiB).
	MaxValueBytes int `yaml:"max_value_bytes"`
	// MaxTxnOps is the largest number of operations plus compares in one transaction
	// (default 1,024).
	MaxTxnOps int `yaml:"max_txn_ops"`
	// MaxTxnBytes is the largest total of key and value bytes in one transaction (default 4 MiB).
	MaxTxnBytes int `yaml:"max_txn_bytes"`
	// MaxFrameBytes is the largest protocol frame (default 8 MiB).
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// MaxInFlightBytes bounds, per process, the request bytes read and not yet answered
	// (default a sixteenth of storage.memory_bytes, 8 MiB at its default, and at least
	// max_frame_bytes). Past it a client's request waits up to a second to be read, then is
	// refused as busy (wire.CodeBusy), which the client retries; a request from a process of
	// the cluster waits. It bounds the memory requests hold.
	MaxInFlightBytes int64 `yaml:"max_inflight_bytes"`
}

// inFlightShare is the part of the memory budget that the requests in flight get by default
// (Limits.MaxInFlightBytes), on the master as on the nodes: the master's budget is what bounds
// the prepares a node serves, and a node holds each request's values several times over
// (txn/README.md, Memory, has why and the measurements).
const inFlightShare = 16

// Timeouts are the protocol's clocks. A zero field means the default given in its comment.
type Timeouts struct {
	// Prepare bounds the master's wait for all votes (default 5s); past it the transaction aborts.
	Prepare time.Duration `yaml:"prepare"`
	// CommitWait bounds how long a new transaction waits at the master for the abort under way
	// of one on the same keys, before it prepares anyway (default 2s). (A committed one's phase
	// 2 is not waited for: the request carries its commit.)
	CommitWait time.Duration `yaml:"commit_wait"`
	// InDoubt is the age after which a node asks about a prepared transaction: the master
	// (classic protocol) or the other participants (parallel) (default 3s).
	InDoubt time.Duration `yaml:"in_doubt"`
	// Resolve is how often a node scans for transactions to ask about (default 500ms).
	Resolve time.Duration `yaml:"resolve"`
	// LockWait bounds how long a read waits for a lock before failing with "locked" (default 2s).
	LockWait time.Duration `yaml:"lock_wait"`
	// Request bounds one master→node request (default 5s).
	Request time.Duration `yaml:"request"`
}

// Config describes a whole cluster. Every process reads the same Config: the shard of a key is a
// pure function of the key and the ordered node list, so all processes agree on it.
type Config struct {
	// Master is the router, oracle and 2PC coordinator.
	Master Process `yaml:"master"`
	// Nodes are the shard nodes, in shard order. Their order defines the shard map.
	Nodes []Process `yaml:"nodes"`
	// Limits bound request sizes.
	Limits Limits `yaml:"limits"`
	// Timeouts are the protocol's clocks.
	Timeouts Timeouts `yaml:"timeouts"`
	// CommitProtocol is how cross-shard transactions commit: "parallel" (the participants'
	// durable yes votes are the commit point; no decision record, and participants resolve a
	// transaction among themselves) or "classic" (presumed abort: the master's durable decision
	// record is the commit point). Default parallel.
	CommitProtocol string `yaml:"commit_protocol"`
	// GC is the MVCC garbage collection of old versions.
	GC GC `yaml:"gc"`
	// Storage bounds what each node keeps on disk and in memory.
	Storage StorageConfig `yaml:"storage"`
	// TLS says where the processes find the certificates of the cluster's mutual TLS, and
	// whether their metrics endpoints use them.
	TLS TLSConfig `yaml:"tls"`
}

// DefaultCertsDir is the certificate directory of the built-in cluster, where `make run` and
// `kvctl cert init` put the certificates.
const DefaultCertsDir = "data/certs"

// TLSConfig names the files of the mutual TLS every link uses (package txn/certs): each process
// presents its own certificate and trusts the CA certificates. A process started with
// --insecure reads none of them.
type TLSConfig struct {
	// Dir holds ca.crt, NAME.crt and NAME.key for each process (master.crt, node1.crt, ...)
	// and client.crt and client.key for kvctl (default DefaultCertsDir).
	Dir string `yaml:"dir"`
	// CA, if set, replaces Dir/ca.crt: the CA certificates trusted.
	CA string `yaml:"ca,omitempty"`
	// Cert, if set, replaces Dir/NAME.crt for the process that reads this config (a config
	// file per machine); kvctl takes its own (--cert).
	Cert string `yaml:"cert,omitempty"`
	// Key, if set, replaces Dir/NAME.key, as Cert does.
	Key string `yaml:"key,omitempty"`
	// Metrics makes every process's metrics endpoint HTTPS with its own certificate, and
	// requires of each scraper a client certificate signed by the CA, of any role (txn/README.md,
	// Security). Default off: plain HTTP, as Prometheus scrapes by default.
	Metrics bool `yaml:"metrics,omitempty"`
}

// StorageConfig bounds what each node keeps on disk and in memory. (Its name keeps clear of
// Storage, what a participant needs of its shard.)
type StorageConfig struct {
	// QuotaBytes is the most bytes a node's shard may take on disk, counted as du counts its
	// files: at it, the node refuses new writes with "space exceeded" until the GC frees space
	// (default 8 GiB, etcd's suggested maximum; at least 1 MiB; negative: no quota).
	QuotaBytes int64 `yaml:"quota_bytes"`
	// MemoryBytes is the memory budget of each node's storage engine (default 128 MiB, which
	// keeps a node's anonymous memory under 200 MiB under writes of values up to 64 KiB):
	// Badger's memtables are sized from it and what else Badger holds is bounded with them (it
	// keeps no block or index cache: reads come from the page cache), and a node runs with a Go
	// soft memory limit of this plus 32 MiB (txn/README.md, Memory). It must hold the largest
	// transaction the limits allow: 117 MiB at the default limits, more for larger
	// max_txn_bytes (kv.MinMemoryBytes).
	MemoryBytes int64 `yaml:"memory_bytes"`
}

// Quota returns the quota in bytes, 0 for none.
func (s StorageConfig) Quota() int64 { return max(s.QuotaBytes, 0) }

// GC configures the MVCC garbage collection: a cluster-wide safe point trails the newest
// timestamp by Retention; a read below it fails with "compacted", and versions older than the
// newest at or below it may be dropped.
type GC struct {
	// Retention is how far back in time reads stay possible (default 10m, as etcd's
	// auto-compaction retention).
	Retention time.Duration `yaml:"retention"`
	// Off keeps every version for good.
	Off bool `yaml:"off"`
}

// The commit protocols (Config.CommitProtocol).
const (
	ProtocolClassic  = "classic"
	ProtocolParallel = "parallel"
)

// MasterName is the name the master goes by in logs, hellos and status.
const MasterName = "master"

// DefaultConfig returns the built-in cluster: one master and two nodes on 127.0.0.1 with data
// under ./data. Every binary runs on it with no config file.
func DefaultConfig() Config {
	return Config{
		Master: Process{Name: MasterName, Listen: "127.0.0.1:9000", Metrics: "127.0.0.1:9100", DataDir: "data/master"},
		Nodes: []Process{
			{Name: "node1", Listen: "127.0.0.1:9001", Metrics: "127.0.0.1:9101", DataDir: "data/node1"},
			{Name: "node2", Listen: "127.0.0.1:9002", Metrics: "127.0.0.1:9102", DataDir: "data/node2"},
		},
	}.WithDefaults()
}

// WithDefaults returns c with every zero limit and timeout replaced by its default.
func (c Config) WithDefaults() Config {
	c.Master.Name = MasterName
	l := &c.Limits
	setInt(&l.MaxKeyBytes, 4<<10)
	setInt(&l.MaxValueBytes, 1<<20)
	setInt(&l.MaxTxnOps, 1024)
	setInt(&l.MaxTxnBytes, 4<<20)
	setInt(&l.MaxFrameBytes, 8<<20)
	if c.CommitProtocol == "" {
		c.CommitProtocol = ProtocolParallel
	}
	setDur(&c.GC.Retention, 10*time.Minute)
	if c.TLS.Dir == "" {
		c.TLS.Dir = DefaultCertsDir
	}
	if c.Storage.QuotaBytes == 0 {
		c.Storage.QuotaBytes = 8 << 30
	}
	if c.Storage.MemoryBytes == 0 {
		c.Storage.MemoryBytes = kv.DefaultMemoryBytes
	}
	if l.MaxInFlightBytes == 0 {
		l.MaxInFlightBytes = max(c.Storage.MemoryBytes/inFlightShare, int64(l.MaxFrameBytes))
	}
	t := &c.Timeouts
	setDur(&t.Prepare, 5*time.Second)
	setDur(&t.CommitWait, 2*time.Second)
	setDur(&t.InDoubt, 3*time.Second)
	setDur(&t.Resolve, 500*time.Millisecond)
	setDur(&t.LockWait, 2*time.Second)
	setDur(&t.Request, 5*time.Second)
	return c
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDur(p *time.Duration, def time.Duration) {
	if *p == 0 {
		*p = def
	}
}

// Validate reports every problem of c at once, or nil.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkAddr := func(what, addr string, required bool) {
		if addr == "" {
			if required {
				add("%s: address is required", what)
			}
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add("%s: bad address %q: %v", what, addr, err)
		}
	}
	// The processes are dialled at their DialAddr, which must tell them apart. A process with
	// an advertise address may run on a machine (or in a container) of its own, so its listen
	// and metrics addresses are checked only against each other, and its data directory not
	// at all; those of the processes without one, which share a machine, are checked against
	// all of theirs.
	type dialer struct {
		what       string
		advertised bool
	}
	dialed := map[string]dialer{}
	bound := map[string]map[string]string{}
	claim := func(scope, owner, addr string) {
		if addr == "" {
			return
		}
		if bound[scope] == nil {
			bound[scope] = map[string]string{}
		}
		if prev, ok := bound[scope][addr]; ok {
			add("%s: address %s is also used by %s", owner, addr, prev)
		}
		bound[scope][addr] = owner
	}
	checkProcess := func(what string, p Process) {
		checkAddr(what+".listen", p.Listen, true)
		checkAddr(what+".metrics", p.Metrics, false)
		if p.Advertise != "" {
			checkAdvertise(what+".advertise", p.Advertise, add)
		} else if host, _, err := net.SplitHostPort(p.Listen); err == nil && IsWildcardHost(host) {
			add("%s.listen %s binds every interface, and no other process can dial that address: set %s.advertise to the host:port the others should dial (this machine's address or name)", what, p.Listen, what)
		}
		scope := ""
		if p.Advertise != "" {
			scope = what
		}
		claim(scope, what+".listen", p.Listen)
		claim(scope, what+".metrics", p.Metrics)
		if addr := p.DialAddr(); addr != "" {
			// (Two listen addresses on one machine are reported above.)
			if prev, ok := dialed[addr]; ok && (prev.advertised || p.Advertise != "") {
				add("%s: %s is dialled at %s too", what, prev.what, addr)
			}
			dialed[addr] = dialer{what, p.Advertise != ""}
		}
	}
	checkProcess("master", c.Master)
	if c.Master.DataDir == "" {
		add("master.data_dir is required")
	}
	if len(c.Nodes) == 0 {
		add("nodes: at least one node is required")
	}
	names := map[string]bool{MasterName: true}
	// Data directories, like listen addresses, may repeat on machines of their own.
	dirs := map[string]string{}
	if c.Master.Advertise == "" {
		dirs[c.Master.DataDir] = "master"
	}
	for i, n := range c.Nodes {
		what := fmt.Sprintf("nodes[%d]", i)
		if n.Name == "" {
			add("%s: name is required", what)
		} else if names[n.Name] {
			add("%s: name %q is used twice (or is reserved)", what, n.Name)
		}
		names[n.Name] = true
		checkProcess(what, n)
		if n.DataDir == "" {
			add("%s.data_dir is required", what)
		} else if prev, ok := dirs[n.DataDir]; ok && n.Advertise == "" {
			add("%s.data_dir %s is also used by %s", what, n.DataDir, prev)
		}
		if n.Advertise == "" {
			dirs[n.DataDir] = n.Name
		}
	}
	l := c.Limits
	if l.MaxKeyBytes < 1 || l.MaxValueBytes < 0 || l.MaxTxnOps < 1 || l.MaxTxnBytes < 1 {
		add("limits: must be positive")
	}
	if l.MaxFrameBytes < l.MaxTxnBytes+64<<10 {
		add("limits.max_frame_bytes (%d) must exceed max_txn_bytes (%d) by at least 64 KiB", l.MaxFrameBytes, l.MaxTxnBytes)
	}
	if l.MaxInFlightBytes < int64(l.MaxFrameBytes) {
		add("limits.max_inflight_bytes (%d) must be at least max_frame_bytes (%d)", l.MaxInFlightBytes, l.MaxFrameBytes)
	}
	switch min := kv.MinMemoryBytes(l.MaxTxnBytes, l.MaxTxnOps, l.MaxKeyBytes); {
	case min == math.MaxInt64:
		add("limits.max_txn_bytes (%d): a transaction this large cannot fit in one memtable", l.MaxTxnBytes)
	case c.Storage.MemoryBytes < min:
		add("storage.memory_bytes (%d) must be at least %d (%d MiB) for the limits: their largest transaction must fit in one memtable", c.Storage.MemoryBytes, min, (min+1<<20-1)>>20)
	}
	if !c.GC.Off && c.GC.Retention < time.Second {
		add("gc.retention (%v) must be at least 1s", c.GC.Retention)
	}
	if q := c.Storage.QuotaBytes; q >= 0 && q < 1<<20 {
		add("storage.quota_bytes (%d) must be at least 1 MiB (1048576), or negative for no quota", q)
	}
	if c.CommitProtocol != ProtocolClassic && c.CommitProtocol != ProtocolParallel {
		add("commit_protocol: %q is neither %q nor %q", c.CommitProtocol, ProtocolClassic, ProtocolParallel)
	}
	t := c.Timeouts
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"prepare", t.Prepare}, {"commit_wait", t.CommitWait}, {"in_doubt", t.InDoubt}, {"resolve", t.Resolve}, {"lock_wait", t.LockWait}, {"request", t.Request}} {
		if d.v <= 0 {
			add("timeouts.%s must be positive", d.name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("txn: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// checkAdvertise reports what makes addr no address to dial: no host, a wildcard host, or a
// port that is not a number from 1 to 65535.
func checkAdvertise(what, addr string, add func(string, ...any)) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		add("%s: bad address %q: %v", what, addr, err)
		return
	}
	if IsWildcardHost(host) {
		add("%s: %q has no host to dial: advertise this machine's address or name, not a wildcard", what, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		add("%s: %q: the port must be a number from 1 to 65535", what, addr)
	}
}

// Node returns the node named name.
func (c Config) Node(name string) (Process, error) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	known := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		known[i] = n.Name
	}
	return Process{}, fmt.Errorf("txn: unknown node %q (the config has %s)", name, strings.Join(known, ", "))
}

// ShardMap maps keys to nodes: FNV-1a of the key modulo the number of nodes, over the node list in
// config order. It is immutable and safe for concurrent use.
type ShardMap struct {
	names []string
	id    uint64
}

// NewShardMap builds the shard map of the given node names, in shard order.
func NewShardMap(names []string) *ShardMap {
	h := fnv.New64a()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	return &ShardMap{names: append([]string(nil), names...), id: id}
}

// ShardMap returns the cluster's shard map.
func (c Config) ShardMap() *ShardMap {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return NewShardMap(names)
}

// Shard returns the index of the node that owns key.
func (m *ShardMap) Shard(key []byte) int {
	var h uint64 = 14695981039346656037
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return int(h % uint64(len(m.names)))
}

// Names returns the node names in shard order.
func (m *ShardMap) Names() []string { return append([]string(nil), m.names...) }

// Len returns the number of shards.
func (m *ShardMap) Len() int { return len(m.names) }

// ID fingerprints the node list; processes exchange it in their hello so that a node never
// serves a master that shards keys differently.
func (m *ShardMap) ID() uint64 { return m.id }

// protocolDefaults fills the zero limits, timeouts, logger and runtime that the coordinator
// and the participant share.
func protocolDefaults(l *Limits, t *Timeouts, log **slog.Logger, rt *Runtime) {
	full := Config{Limits: *l, Timeouts: *t}.WithDefaults()
	*l, *t = full.Limits, full.Timeouts
	if *log == nil {
		*log = slog.Default()
	}
	if *rt == nil {
		*rt = RealRuntime{}
	}
}
