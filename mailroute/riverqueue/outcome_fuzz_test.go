package riverqueue

import (
	"strconv"
	"testing"
)

// FuzzNextGroup checks the grouping of waiting outcomes. The input is
// the group's cap (first byte, 1 to 16) and then one outcome a byte: its
// message (the low 3 bits, so that messages repeat) and whether its caller
// has given up (the high bit). Whatever the input: every outcome not given
// up is in the group or left waiting, exactly once and in its order; none
// given up is in either; the group holds at most the cap and one outcome
// a message; its members are marked sent, the others still waiting; and
// an outcome is left out only when the group is full or already holds its
// message, so that nothing waits for no reason.
func FuzzNextGroup(f *testing.F) {
	f.Add([]byte{4, 1, 2, 3})
	f.Add([]byte{2, 1, 1, 1, 2})
	f.Add([]byte{3, 0x81, 1, 0x82, 2, 3, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		max := int(in[0])%16 + 1
		var pending []*outcome
		for _, b := range in[1:] {
			o := &outcome{id: strconv.Itoa(int(b & 7))}
			if b&0x80 != 0 {
				o.phase.Store(outcomeAbandoned)
			}
			pending = append(pending, o)
		}
		group, rest := nextGroup(pending, max)

		if len(group) > max {
			t.Fatalf("group of %d, cap %d", len(group), max)
		}
		ids := map[string]bool{}
		for _, o := range group {
			if ids[o.id] {
				t.Fatalf("two outcomes for message %s in one group", o.id)
			}
			ids[o.id] = true
			if o.phase.Load() != outcomeSent {
				t.Fatalf("a member of the group is not marked sent")
			}
		}
		for _, o := range rest {
			if o.phase.Load() != outcomeWaiting {
				t.Fatalf("an outcome left waiting is marked %d", o.phase.Load())
			}
			if len(group) < max && !ids[o.id] {
				t.Fatalf("message %s left waiting though the group has room and none of its outcomes", o.id)
			}
		}
		// Group and rest are pending without the abandoned ones, each
		// in the order of pending.
		gi, ri := 0, 0
		for _, o := range pending {
			switch {
			case gi < len(group) && group[gi] == o:
				gi++
			case ri < len(rest) && rest[ri] == o:
				ri++
			case o.phase.Load() == outcomeAbandoned:
			default:
				t.Fatalf("an outcome was lost, or moved out of order")
			}
		}
		if gi != len(group) || ri != len(rest) {
			t.Fatalf("group or rest holds an outcome that was not pending, or out of order")
		}
	})
}
