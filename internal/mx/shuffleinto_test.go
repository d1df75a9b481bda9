package mx

import (
	"net"
	"testing"
)

// ShuffledInto makes the copy in the caller's arrays when they have room
// (no allocation), in new ones otherwise, and either way keeps preference
// order with every host once and the cached records untouched.
func TestShuffledInto(t *testing.T) {
	a := Answer{Hosts: []*net.MX{{Host: "a", Pref: 10}, {Host: "b", Pref: 10}, {Host: "c", Pref: 20}}}
	check := func(t *testing.T, got Answer) {
		t.Helper()
		seen := map[string]bool{}
		for i, h := range got.Hosts {
			if i > 0 && h.Pref < got.Hosts[i-1].Pref {
				t.Fatalf("out of preference order: %v", got.Hosts)
			}
			seen[h.Host] = true
			for _, c := range a.Hosts {
				if h == c {
					t.Fatal("a cached record handed out")
				}
			}
		}
		if len(got.Hosts) != 3 || len(seen) != 3 || got.Hosts[2].Host != "c" {
			t.Fatalf("hosts %v", got.Hosts)
		}
	}
	var hosts [3]*net.MX
	var recs [3]net.MX
	for range 20 {
		got := a.ShuffledInto(hosts[:], recs[:])
		check(t, got)
		if &got.Hosts[0] != &hosts[0] || got.Hosts[0] != &recs[0] && got.Hosts[0] != &recs[1] {
			t.Fatal("the caller's arrays were not used")
		}
	}
	if n := testing.AllocsPerRun(50, func() { a.ShuffledInto(hosts[:], recs[:]) }); n != 0 {
		t.Errorf("%v allocations with room", n)
	}
	short := a.ShuffledInto(hosts[:2], recs[:2])
	check(t, short)
	if &short.Hosts[0] == &hosts[0] {
		t.Error("arrays too short were used")
	}
	if a.Hosts[0].Host != "a" || a.Hosts[1].Host != "b" {
		t.Error("the cached answer was reordered")
	}
}
