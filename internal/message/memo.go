package message

import (
	"hash/maphash"
	"sync/atomic"
)

// AddressMemo remembers recently parsed addresses, so that a program
// sending to the same few addresses again and again (a sender address
// above all) parses each once. ParseAddress is a pure function of its
// input, so a remembered answer is always the right one. The memo is a
// fixed table of memoSlots entries indexed by a hash of the input, the
// last address parsed into a slot replacing the one before: bounded
// whatever the traffic, and lock-free. Errors are not remembered. The
// zero value is ready to use; it is safe for concurrent use.
type AddressMemo struct {
	seed  atomic.Pointer[maphash.Seed]
	slots [memoSlots]atomic.Pointer[memoEntry]
}

const memoSlots = 256

type memoEntry struct {
	in string
	a  Address
}

// Parse is ParseAddress, remembered.
func (m *AddressMemo) Parse(s string) (Address, error) {
	seed := m.seed.Load()
	if seed == nil {
		s := maphash.MakeSeed()
		m.seed.CompareAndSwap(nil, &s)
		seed = m.seed.Load()
	}
	slot := &m.slots[maphash.String(*seed, s)%memoSlots]
	if e := slot.Load(); e != nil && e.in == s {
		return e.a, nil
	}
	a, err := ParseAddress(s)
	if err == nil && len(s) <= MaxPath {
		slot.Store(&memoEntry{in: s, a: a})
	}
	return a, err
}
