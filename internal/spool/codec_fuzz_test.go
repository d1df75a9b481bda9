package spool

import (
	"reflect"
	"testing"
)

// FuzzDecodeState feeds arbitrary bytes to the state parser, which reads
// whatever a crash or a disk left in a file: it must never panic, and what
// it accepts must encode back to an equal state.
func FuzzDecodeState(f *testing.F) {
	m := testMessage("seed", t0, "a@example.com", `"q r"@example.net`)
	good, err := encodeState(m, bodyInfo{size: 123, crc: 0xdeadbeef})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	m.RequireTLS = true
	marked, err := encodeState(m, bodyInfo{size: 123, crc: 0xdeadbeef})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(marked)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"version":1,"crc32c":"00000000","payload":{}}`))
	f.Add([]byte(`{"version":1,"crc32c":"zz","payload":null}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, info, err := decodeState(data)
		if err != nil {
			return
		}
		again, err := encodeState(m, info)
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		m2, info2, err := decodeState(again)
		if err != nil || info2 != info || !reflect.DeepEqual(m2, m) {
			t.Fatalf("round trip changed the state: %v\n%+v\n%+v", err, m, m2)
		}
	})
}
