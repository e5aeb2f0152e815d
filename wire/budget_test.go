package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
)

// An 8 MiB Prepare of 8.4 million empty ops once decoded to ~470 MB before the op-count check
// saw it. Now the decoder refuses it with "too large" before it allocates the list, whether
// the fast decoder reads it or, in a form it leaves to the reflection codec, weigh does.
func TestDecodeAmplificationIsRefused(t *testing.T) {
	const n = 8<<20 - 64
	list := func(elem byte) []byte { // an array of n one-byte elements
		b := binary.BigEndian.AppendUint32([]byte{mpArray32}, n)
		return append(b, bytes.Repeat([]byte{elem}, n)...)
	}
	fast := append([]byte{0x81, 0xa3, 'O', 'p', 's'}, list(0x80)...) // {"Ops": [{}, {}, ...]}
	// The same as an array of fields (TxnID, StartTS, Compares, Ops), a form the fast decoder
	// leaves to the reflection codec.
	reflected := append([]byte{0x94, 1, 1, 0xc0}, list(0x80)...)
	for _, tc := range []struct {
		name string
		body []byte
	}{{"fast", fast}, {"reflection", reflected}} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var m PrepareRequest
			err := Unmarshal(tc.body, &m)
			runtime.ReadMemStats(&after)
			var we *Error
			if !errors.As(err, &we) || we.Code != CodeTooLarge {
				t.Fatalf("Unmarshal of %d empty ops: %v, want too_large", n, err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Fatalf("refusing %d empty ops allocated %d MiB", n, alloc>>20)
			}
			t.Logf("%v", err)
		})
	}
}
