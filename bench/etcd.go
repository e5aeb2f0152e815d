package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtx/kvtx/txn"
)

// etcdTarget is an etcd server reached through its v3 client. Puts and transactions are etcd
// Txns (durable: etcd fsyncs its WAL before it answers, batching concurrent writes), reads and
// range reads are linearizable (the client's default), and the conditional transaction compares each key's
// ModRevision, which is 0 for a missing key as a kvtx version is.
type etcdTarget struct {
	tc TargetConfig

	mu    sync.Mutex
	conns map[int]*clientv3.Client
}

// etcdURL turns host:port into http://host:port and leaves URLs alone.
func etcdURL(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return endpoint
	}
	return "http://" + endpoint
}

func openEtcd(ctx context.Context, tc TargetConfig) (*etcdTarget, error) {
	if tc.EtcdEndpoint == "" {
		tc.EtcdEndpoint = "127.0.0.1:2379"
	}
	t := &etcdTarget{tc: tc, conns: map[int]*clientv3.Client{}}
	cl, err := t.conn(0)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, tc.DialTimeout)
	defer cancel()
	if _, err := cl.Status(sctx, etcdURL(tc.EtcdEndpoint)); err != nil {
		t.Close()
		return nil, fmt.Errorf("bench: etcd at %s does not answer: %w", tc.EtcdEndpoint, err)
	}
	return t, nil
}

// EtcdVersion asks the etcd server at endpoint for its version.
func EtcdVersion(ctx context.Context, endpoint string) (string, error) {
	cl, err := newEtcdClient(endpoint, TargetConfig{DialTimeout: 5 * time.Second})
	if err != nil {
		return "", err
	}
	defer cl.Close()
	st, err := cl.Status(ctx, etcdURL(endpoint))
	if err != nil {
		return "", fmt.Errorf("bench: etcd status at %s: %w", endpoint, err)
	}
	return st.Version, nil
}

func newEtcdClient(endpoint string, tc TargetConfig) (*clientv3.Client, error) {
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{etcdURL(endpoint)},
		DialTimeout: tc.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("bench: etcd client for %s: %w", endpoint, err)
	}
	return cl, nil
}

// conn returns the client of connection slot i, creating it the first time.
func (t *etcdTarget) conn(i int) (*clientv3.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cl, ok := t.conns[i]; ok {
		return cl, nil
	}
	cl, err := newEtcdClient(t.tc.EtcdEndpoint, t.tc)
	if err != nil {
		return nil, err
	}
	t.conns[i] = cl
	return cl, nil
}

func (t *etcdTarget) Name() string { return TargetEtcd }

// Shards is nil: etcd keeps every key in one replicated log.
func (t *etcdTarget) Shards() *txn.ShardMap { return nil }

// NewSession gives client i connection i mod tc.Conns.
func (t *etcdTarget) NewSession(_ context.Context, i int) (Session, error) {
	cl, err := t.conn(i % max(1, t.tc.Conns))
	if err != nil {
		return nil, err
	}
	return &etcdSession{cl: cl}, nil
}

func (t *etcdTarget) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, cl := range t.conns {
		cl.Close()
		delete(t.conns, i)
	}
	return nil
}

type etcdSession struct {
	cl  *clientv3.Client
	ops []clientv3.Op
	cmp []clientv3.Cmp
}

func (s *etcdSession) Put(ctx context.Context, key, value []byte) error {
	_, err := s.cl.Put(ctx, string(key), string(value))
	return etcdError(err, true)
}

func (s *etcdSession) Get(ctx context.Context, key []byte) (bool, error) {
	resp, err := s.cl.Get(ctx, string(key))
	if err != nil {
		return false, etcdError(err, false)
	}
	return len(resp.Kvs) > 0, nil
}

// Scan is a range Get, linearizable (etcd's default, as kvtx's reads are), of at most limit
// keys.
func (s *etcdSession) Scan(ctx context.Context, start, end []byte, limit int) (int, error) {
	resp, err := s.cl.Get(ctx, string(start), clientv3.WithRange(string(end)), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return 0, etcdError(err, false)
	}
	return len(resp.Kvs), nil
}

func (s *etcdSession) Txn(ctx context.Context, keys, values [][]byte) error {
	s.ops = s.ops[:0]
	for i, k := range keys {
		s.ops = append(s.ops, clientv3.OpPut(string(k), string(values[i])))
	}
	_, err := s.cl.Txn(ctx).Then(s.ops...).Commit()
	return etcdError(err, true)
}

// Snapshot reads keys in one Txn, so at one revision.
func (s *etcdSession) Snapshot(ctx context.Context, keys [][]byte) ([]Versioned, error) {
	s.ops = s.ops[:0]
	for _, k := range keys {
		s.ops = append(s.ops, clientv3.OpGet(string(k)))
	}
	resp, err := s.cl.Txn(ctx).Then(s.ops...).Commit()
	if err != nil {
		return nil, etcdError(err, false)
	}
	out := make([]Versioned, len(keys))
	for i, r := range resp.Responses {
		if i >= len(out) {
			break
		}
		rr := r.GetResponseRange()
		if rr != nil && len(rr.Kvs) > 0 {
			kv := rr.Kvs[0]
			out[i] = Versioned{Value: kv.Value, Version: uint64(kv.ModRevision), Found: true}
		}
	}
	return out, nil
}

func (s *etcdSession) CondTxn(ctx context.Context, keys [][]byte, versions []uint64, values [][]byte) error {
	s.ops, s.cmp = s.ops[:0], s.cmp[:0]
	for i, k := range keys {
		s.cmp = append(s.cmp, clientv3.Compare(clientv3.ModRevision(string(k)), "=", int64(versions[i])))
		s.ops = append(s.ops, clientv3.OpPut(string(k), string(values[i])))
	}
	resp, err := s.cl.Txn(ctx).If(s.cmp...).Then(s.ops...).Commit()
	if err != nil {
		return etcdError(err, true)
	}
	if !resp.Succeeded {
		return &OpError{Outcome: Aborted, Reason: ReasonCompareFailed, Err: errors.New("etcd: a ModRevision compare did not hold")}
	}
	return nil
}

// Close does nothing: the target owns the clients.
func (s *etcdSession) Close() error { return nil }

// etcdError classifies an etcd client error. etcd cannot tell whether a write that failed in
// flight was applied, so every failed write is unknown unless gRPC says it was refused before it
// ran (resource exhausted, invalid argument, ...); a failed read is an error.
func etcdError(err error, write bool) error {
	if err == nil {
		return nil
	}
	code := status.Code(err)
	reason := strings.ToLower(code.String())
	if errors.Is(err, context.DeadlineExceeded) || code == codes.DeadlineExceeded {
		reason = "timeout"
	}
	if !write {
		return &OpError{Outcome: Failed, Reason: reason, Err: err}
	}
	switch code {
	case codes.ResourceExhausted, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated:
		return &OpError{Outcome: Aborted, Reason: reason, Err: err}
	}
	return &OpError{Outcome: Unknown, Reason: reason, Err: err}
}
