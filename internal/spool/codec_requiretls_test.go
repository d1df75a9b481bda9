package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"testing"
	"time"
)

// A state file written before the REQUIRETLS mark existed
// (testdata/state-v1.json, as that version wrote it) is read as a message
// without the mark, and an unmarked message is still written exactly so:
// format version 1, no new field, readable by that version.
func TestStateV1StillRead(t *testing.T) {
	old, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	m, info, err := decodeState(old)
	if err != nil {
		t.Fatalf("a version 1 state file is refused: %v", err)
	}
	if m.RequireTLS {
		t.Error("a version 1 state file read with the REQUIRETLS mark")
	}
	if len(m.Recipients) != 2 || m.Recipients[1].Rcpt != "b@example.net" || info.size != 42 {
		t.Errorf("read %+v, %+v", m, info)
	}
	again, err := encodeState(m, info)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, old) {
		t.Errorf("an unmarked message is no longer written as version 1 wrote it:\n%s\n%s", again, old)
	}
}

// A marked message is written in format version 2 with the mark, and read
// back with it.
func TestStateRequireTLSRoundTrip(t *testing.T) {
	m := testMessage("marked", t0, "a@example.com")
	m.RequireTLS = true
	b, err := encodeState(m, bodyInfo{size: 7, crc: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(`{"version":2,`)) || !bytes.Contains(b, []byte(`"require_tls":true`)) {
		t.Errorf("marked state written as %s", b)
	}
	got, _, err := decodeState(b)
	if err != nil || !got.RequireTLS {
		t.Fatalf("read back: %+v, %v", got, err)
	}
}

// stateWith frames a payload as a state file with a correct checksum, so
// that only the version and the payload are under test.
func stateWith(version int, payload string) []byte {
	return fmt.Appendf(nil, `{"version":%d,"crc32c":"%08x","payload":%s}`, version, crc32.Checksum([]byte(payload), castagnoli), payload)
}

// The version and the mark must agree: a state where they do not was not
// written by this package, and is refused (quarantined by Open) rather
// than read either way.
func TestStateRequireTLSRefused(t *testing.T) {
	const rest = `"id":"x","from":"","created":"2025-03-01T11:59:00Z","recipients":[{"rcpt":"a@example.com","attempts":0,"direct_attempts":0,"next_attempt":"2025-03-01T12:00:00Z","queued":"2025-03-01T11:59:00Z"}],"body_size":1,"body_crc32c":0`
	for _, tt := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"version 1 without the mark", stateWith(1, `{`+rest+`}`), true},
		{"version 2 with the mark", stateWith(2, `{"require_tls":true,`+rest+`}`), true},
		{"version 1 with the mark", stateWith(1, `{"require_tls":true,`+rest+`}`), false},
		{"version 2 without the mark", stateWith(2, `{`+rest+`}`), false},
		{"version 2 with the mark false", stateWith(2, `{"require_tls":false,`+rest+`}`), false},
		{"the mark not a boolean", stateWith(2, `{"require_tls":"yes",`+rest+`}`), false},
		{"version 3", stateWith(3, `{"require_tls":true,`+rest+`}`), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeState(tt.data)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, errBadState) {
				t.Fatalf("accepted (err %v), want errBadState", err)
			}
		})
	}
}

// The store keeps the mark as Enqueue stored it: through Lease, an Update
// whose copy says otherwise, and a restart (journal and state files).
func TestStoreKeepsRequireTLS(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	ctx := context.Background()
	marked := testMessage("marked", t0, "a@example.com", "b@example.com")
	marked.RequireTLS = true
	plain := testMessage("plain", t0, "c@example.com")
	enqueueT(t, s, marked, testBody(100, 1))
	enqueueT(t, s, plain, testBody(100, 2))

	leased, err := s.Lease(ctx, t0, 10, time.Hour)
	if err != nil || len(leased) != 2 {
		t.Fatalf("Lease: %d, %v", len(leased), err)
	}
	for _, m := range leased {
		if m.RequireTLS != (m.ID == "marked") {
			t.Errorf("leased %s with RequireTLS %v", m.ID, m.RequireTLS)
		}
		m.RequireTLS = !m.RequireTLS // a copy that lost (or gained) it
		m.Recipients[0].Attempts = 1
		if err := s.Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string, s *Store) {
		t.Helper()
		l := listT(t, s)
		if len(l) != 2 {
			t.Fatalf("%s: %d messages", when, len(l))
		}
		for _, m := range l {
			if m.RequireTLS != (m.ID == "marked") || m.Recipients[0].Attempts != 1 {
				t.Errorf("%s: %s has RequireTLS %v, attempts %d", when, m.ID, m.RequireTLS, m.Recipients[0].Attempts)
			}
		}
	}
	check("after Update", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	state, err := os.ReadFile(s.statePath("marked"))
	if err != nil || !strings.HasPrefix(string(state), `{"version":2,`) {
		t.Errorf("the marked state file: %.40s, %v", state, err)
	}
	check("after a restart", openT(t, dir, Options{NoSync: true}))
}
