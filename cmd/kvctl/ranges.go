package main

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// rangeFlags are get's flags for reading a range of keys (and --at, for a point read too).
func rangeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "prefix", Usage: "read every key that starts with `P`"},
		&cli.BoolFlag{Name: "range", Usage: "read the keys of [KEY, END): the two arguments"},
		&cli.StringFlag{Name: "from-key", Usage: "read `KEY` and every key after it"},
		&cli.IntFlag{Name: "limit", Usage: "print at most `N` keys of the range (0: all)"},
		&cli.BoolFlag{Name: "keys-only", Usage: "print the keys of the range, not their values"},
		&cli.BoolFlag{Name: "count-only", Usage: "print how many keys the range holds"},
		&cli.Uint64Flag{Name: "at", Usage: "read at `VERSION` instead of now"},
	}
}

// rangeBounds turns get's range flags and arguments into [start, end).
func rangeBounds(c *cli.Context) (start, end []byte, err error) {
	switch {
	case c.IsSet("prefix"):
		if c.NArg() > 0 {
			return nil, nil, usage("get --prefix takes no KEY arguments")
		}
		p := []byte(c.String("prefix"))
		return p, prefixEnd(p), nil
	case c.IsSet("from-key"):
		if c.NArg() > 0 {
			return nil, nil, usage("get --from-key takes no other KEY arguments")
		}
		return []byte(c.String("from-key")), nil, nil
	default:
		if c.NArg() != 2 {
			return nil, nil, usage("get --range needs KEY and END")
		}
		return []byte(c.Args().Get(0)), []byte(c.Args().Get(1)), nil
	}
}

// prefixEnd is the first key after every key that starts with p (nil: none, p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// runRange prints a range of keys at one version, as get does several keys; with -o json one
// object per key and a closing object with more and the version read at.
func runRange(c *cli.Context) error {
	start, end, err := rangeBounds(c)
	if err != nil {
		return err
	}
	limit := c.Int("limit")
	if limit < 0 {
		return usage("get --limit must not be negative")
	}
	cl, ctx, cancel, err := dial(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	opts := []client.ScanOption{}
	if c.Bool("keys-only") || c.Bool("count-only") {
		opts = append(opts, client.ScanKeysOnly())
	}
	version := c.Uint64("at")
	count, more := 0, false
	w := c.App.Writer
	jsonMode := opt(c, "output") == "json"
	for from := start; ; {
		page := 0
		if limit > 0 {
			page = min(limit-count, txn.MaxScanLimit)
		}
		kvs, v, m, err := cl.ScanPage(ctx, from, end, page, append(opts, client.ScanAt(version))...)
		if err != nil {
			return err
		}
		version, more = v, m
		for _, kv := range kvs {
			count++
			switch {
			case c.Bool("count-only"):
			case jsonMode && c.Bool("keys-only"):
				jsonOut(w, map[string]any{"key": string(kv.Key), "version": kv.Version})
			case jsonMode:
				jsonOut(w, map[string]any{"key": string(kv.Key), "value": string(kv.Value), "version": kv.Version})
			case c.Bool("keys-only"):
				fmt.Fprintln(w, string(kv.Key))
			default:
				fmt.Fprintln(w, string(kv.Key))
				fmt.Fprintln(w, string(kv.Value))
			}
		}
		if !more || len(kvs) == 0 || limit > 0 && count >= limit {
			break
		}
		from = append(bytes.Clone(kvs[len(kvs)-1].Key), 0)
	}
	switch {
	case c.Bool("count-only") && jsonMode:
		jsonOut(w, map[string]any{"count": count, "version": version})
	case c.Bool("count-only"):
		fmt.Fprintln(w, count)
	case jsonMode:
		jsonOut(w, map[string]any{"more": more, "version": version})
	}
	return nil
}

// runDelRange deletes the keys a range holds at one version, in one transaction conditional
// on each key's version being the one read.
func runDelRange(c *cli.Context) error {
	start, end, err := rangeBounds(c)
	if err != nil {
		return err
	}
	cl, ctx, cancel, err := dial(c)
	if err != nil {
		return err
	}
	var cmps []client.Compare
	var ops []client.Op
	for kv, err := range cl.Scan(ctx, start, end, client.ScanKeysOnly()) {
		if err != nil {
			cancel()
			cl.Close()
			return err
		}
		cmps = append(cmps, client.IfVersion(kv.Key, kv.Version))
		ops = append(ops, client.Del(kv.Key))
	}
	cancel()
	cl.Close()
	if len(ops) == 0 {
		fmt.Fprintln(c.App.Writer, "OK (no key in the range)")
		return nil
	}
	err = runTxn(c, cmps, ops)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == wire.CodeTooLarge {
		return &exitError{code: exitUsage, msg: fmt.Sprintf("del: %d keys match, more than one transaction may hold, nothing deleted: %s", len(ops), ce.Message)}
	}
	return err
}
