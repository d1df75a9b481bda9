package message

import (
	"fmt"
	"testing"
)

// The memo answers exactly as ParseAddress does, for valid and invalid
// input, however many addresses compete for its slots, and a hit costs no
// allocation.
func TestAddressMemo(t *testing.T) {
	var m AddressMemo
	inputs := []string{"a@example.com", "<a@example.com>", "A@EXAMPLE.com", "\"q x\"@example.com",
		"b@[192.0.2.1]", "bad", "a@@x", "üser@bücher.example", "a@example.com.", ""}
	for i := range 1000 { // more than the slots: entries are replaced
		inputs = append(inputs, fmt.Sprintf("user%d@d%d.example", i, i%7))
	}
	for round := range 3 {
		for _, in := range inputs {
			want, wantErr := ParseAddress(in)
			got, err := m.Parse(in)
			if got != want || (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
				t.Fatalf("round %d, %q: memo %+v, %v; ParseAddress %+v, %v", round, in, got, err, want, wantErr)
			}
		}
	}
	m.Parse("sender@example.com")
	if n := testing.AllocsPerRun(100, func() { m.Parse("sender@example.com") }); n != 0 {
		t.Errorf("%v allocations per remembered address", n)
	}
}
