package spool

import (
	"bytes"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// jrec is a record for a hand-built journal segment.
type jrec struct {
	kind uint8
	m    *Message
	body []byte // the body's bytes: in the record for recBody, its size and CRC in the state otherwise
	id   string // for tombstones
}

func stateBytes(t *testing.T, m *Message, body []byte) []byte {
	t.Helper()
	b, err := encodeState(m, bodyInfo{size: int64(len(body)), crc: crc32.Checksum(body, castagnoli)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r jrec) encode(t *testing.T) []byte {
	switch r.kind {
	case recTomb:
		return appendRecord(nil, recTomb, r.id, nil, nil)
	case recBody:
		return appendRecord(nil, recBody, r.m.ID, stateBytes(t, r.m, r.body), r.body)
	default:
		return appendRecord(nil, recState, r.m.ID, stateBytes(t, r.m, r.body), nil)
	}
}

func segmentOf(t *testing.T, recs ...jrec) []byte {
	b := slices.Clone(segmentMagic)
	for _, r := range recs {
		b = append(b, r.encode(t)...)
	}
	return b
}

func writeSegment(t *testing.T, dir string, gen uint64, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, journalSub), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, journalSub, segName(gen)), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// levelled returns the messages logged at exactly level whose text
// contains msg.
func (r *logRecorder) levelled(level slog.Level, msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			out = append(out, rec.Message)
		}
	}
	return out
}

// TestReplay builds journals by hand, each with the files a crash could
// have left beside them, and checks that Open makes the queue what the
// acknowledged records say: the last record of a message wins, a
// tombstone removes its files, a record's body repairs a missing or
// damaged body file, a torn tail is ignored (Info) and damage before the
// tail is reported (Warn) with the segment copied to corrupt/, the records
// after it replayed (journal_resync_test.go has the table of damage). The journal
// is then replayed for good: one fresh, empty generation is left.
func TestReplay(t *testing.T) {
	bodyA, bodyB, big := testBody(2048, 1), testBody(3000, 2), testBody(5000, 3)
	a1 := testMessage("a", t0, "x@example.com", "y@example.com")
	a2 := clone(a1)
	a2.Recipients = a2.Recipients[1:]
	a2.Recipients[0].Attempts = 1
	b1 := testMessage("b", t0, "z@example.com")
	c1 := testMessage("c", t0, "w@example.com")
	// A REQUIRETLS message: its journal records carry the mark.
	r1 := testMessage("r", t0, "x@example.com", "y@example.com")
	r1.RequireTLS = true
	r2 := clone(r1)
	r2.Recipients = r2.Recipients[1:]
	r2.Recipients[0].Attempts = 1

	type files map[string][]byte // queue/ before Open; nil value: absent
	cases := []struct {
		name    string
		segs    [][]byte // generations 1, 2, …
		queue   files
		want    []*Message
		bodies  map[string][]byte
		warn    bool // Warn about the journal, and a copy in corrupt/
		torn    bool // Info about a torn tail
		corrupt []string
	}{{
		name:   "missing files are written",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA})},
		want:   []*Message{a1},
		bodies: map[string][]byte{"a": bodyA},
	}, {
		name:   "a marked message's files are written with the mark",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: r1, body: bodyA})},
		want:   []*Message{r1},
		bodies: map[string][]byte{"r": bodyA},
	}, {
		name:   "a marked message's state after body",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: r1, body: bodyA}, jrec{kind: recState, m: r2, body: bodyA})},
		queue:  files{"r.json": stateBytes(t, r1, bodyA)},
		want:   []*Message{r2},
		bodies: map[string][]byte{"r": bodyA},
	}, {
		name:   "state after body",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recState, m: a2, body: bodyA})},
		queue:  files{"a.json": stateBytes(t, a1, bodyA)}, // the Update's rewrite was lost
		want:   []*Message{a2},
		bodies: map[string][]byte{"a": bodyA},
	}, {
		name: "tombstone after state",
		segs: [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recState, m: a2, body: bodyA},
			jrec{kind: recTomb, id: "a"}, jrec{kind: recBody, m: b1, body: bodyB})},
		queue:  files{"a.json": stateBytes(t, a2, bodyA), "a.eml": bodyA}, // the unlinks were lost
		want:   []*Message{b1},
		bodies: map[string][]byte{"b": bodyB},
	}, {
		name: "an ID used again after its tombstone",
		segs: [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recTomb, id: "a"},
			jrec{kind: recBody, m: a2, body: bodyB})},
		want:   []*Message{a2},
		bodies: map[string][]byte{"a": bodyB},
	}, {
		name: "several generations, the later wins",
		segs: [][]byte{
			segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyB}),
			segmentOf(t, jrec{kind: recState, m: a2, body: bodyA}, jrec{kind: recTomb, id: "b"}),
			segmentOf(t, jrec{kind: recBody, m: c1, body: bodyB}),
		},
		queue:  files{"b.json": stateBytes(t, b1, bodyB), "b.eml": bodyB},
		want:   []*Message{a2, c1},
		bodies: map[string][]byte{"a": bodyA, "c": bodyB},
	}, {
		name:   "damaged body file repaired from the journal",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA})},
		queue:  files{"a.json": stateBytes(t, a1, bodyA), "a.eml": append(slices.Clone(bodyA[:1000]), 'X')},
		want:   []*Message{a1},
		bodies: map[string][]byte{"a": bodyA},
	}, {
		name:   "short state file repaired",
		segs:   [][]byte{segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA})},
		queue:  files{"a.json": stateBytes(t, a1, bodyA)[:40], "a.eml": bodyA},
		want:   []*Message{a1},
		bodies: map[string][]byte{"a": bodyA},
	}, {
		name: "a large body is not in the journal: its file must be there",
		segs: [][]byte{segmentOf(t, jrec{kind: recState, m: a1, body: big}, jrec{kind: recState, m: b1, body: big})},
		// a's body was fsynced before its record; b's is missing, which a
		// crash cannot do: b is quarantined, not guessed at.
		queue:   files{"a.eml": big},
		want:    []*Message{a1},
		bodies:  map[string][]byte{"a": big},
		corrupt: []string{"b.json"},
	}, {
		name: "torn tail",
		segs: [][]byte{func() []byte {
			s := segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyB})
			return s[:len(s)-100] // b's append never completed
		}()},
		want:   []*Message{a1},
		bodies: map[string][]byte{"a": bodyA},
		torn:   true,
	}, {
		name: "torn tail with a bad checksum, zeros after it",
		segs: [][]byte{func() []byte {
			s := segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyB})
			s[len(s)-10] ^= 1
			return append(s, make([]byte, 4096)...)
		}()},
		want:   []*Message{a1},
		bodies: map[string][]byte{"a": bodyA},
		torn:   true,
	}, {
		name: "preallocated zeros after the last record are the end",
		segs: [][]byte{append(segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}), make([]byte, 64<<10)...)},
		want: []*Message{a1}, bodies: map[string][]byte{"a": bodyA},
	}, {
		name: "damage before the tail",
		segs: [][]byte{func() []byte {
			s := segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyB},
				jrec{kind: recBody, m: c1, body: bodyA})
			first := len(segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}))
			s[first+200] ^= 0x40 // inside b's record; c follows intact
			return s
		}()},
		// b's record is lost with its damaged bytes; c, after them, is
		// found again (see journal_resync.go).
		want:    []*Message{a1, c1},
		bodies:  map[string][]byte{"a": bodyA, "c": bodyA},
		warn:    true,
		corrupt: []string{"journal-0000000000000001.log"},
	}, {
		name:    "not a segment",
		segs:    [][]byte{[]byte("hello, I am not a journal")},
		warn:    true,
		corrupt: []string{"journal-0000000000000001.log"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, sub := range []string{queueSub, tmpSub, corruptSub} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for name, b := range tc.queue {
				if err := os.WriteFile(filepath.Join(dir, queueSub, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for i, seg := range tc.segs {
				writeSegment(t, dir, uint64(i+1), seg)
			}
			log, rec := newLog()
			s := openT(t, dir, Options{Logger: log})
			holdsExactly(t, "after replay", s, tc.want)
			for id, b := range tc.bodies {
				if !bytes.Equal(bodyT(t, s, id), b) {
					t.Errorf("body of %s differs", id)
				}
			}
			if w := rec.levelled(slog.LevelWarn, "journal"); (len(w) != 0) != tc.warn {
				t.Errorf("warnings about the journal: %v, want some: %v", w, tc.warn)
			}
			if i := rec.levelled(slog.LevelInfo, "unfinished append"); (len(i) != 0) != tc.torn {
				t.Errorf("torn-tail notes: %v, want some: %v", i, tc.torn)
			}
			if e := rec.levelled(slog.LevelError, ""); len(e) != 0 {
				t.Errorf("errors logged: %v", e)
			}
			var corrupt []string
			for _, c := range filesIn(t, dir, corruptSub) {
				corrupt = append(corrupt, c)
			}
			if !slices.Equal(corrupt, tc.corrupt) {
				t.Errorf("corrupt/ = %v, want %v", corrupt, tc.corrupt)
			}
			if j := filesIn(t, dir, journalSub); !slices.Equal(j, []string{segName(uint64(len(tc.segs) + 1))}) {
				t.Errorf("journal/ = %v, want only the new generation", j)
			}
			s.Close()

			// Replayed for good: a second Open finds the same and repairs nothing.
			log, rec = newLog()
			s2 := openT(t, dir, Options{Logger: log})
			holdsExactly(t, "second Open", s2, tc.want)
			if w := rec.levelled(slog.LevelWarn, ""); len(w) != 0 {
				t.Errorf("second Open warned: %v", w)
			}
		})
	}
}

func filesIn(t *testing.T, dir, sub string) []string {
	t.Helper()
	return files(t, dir, sub)
}

// TestReplayFaults fails each step of Open's replay (rewriting a file,
// removing a deleted message's file, the syncfs, removing the replayed
// generation): Open still succeeds and logs it at Error; the generation
// stays (whole when a file could not be repaired or made durable, so that
// no later generation is removed before it), and the next Open repairs
// everything and leaves one fresh generation.
func TestReplayFaults(t *testing.T) {
	bodyA := testBody(2048, 1)
	a1 := testMessage("a", t0, "x@example.com")
	b1 := testMessage("b", t0, "y@example.com")
	seg := segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyA}, jrec{kind: recTomb, id: "b"})
	for _, st := range []struct {
		step
		kept bool // the journal must survive this Open
	}{
		{step{"rewrite create", OpCreate, ".json", false}, true},
		{step{"rewrite write", OpWrite, ".eml", false}, true},
		{step{"rewrite rename", OpRename, ".json", false}, true},
		{step{"tombstone remove", OpRemove, ".eml", false}, true},
		{step{"syncfs", OpCheckpoint, "", false}, true},
		{step{"drop generation", OpRemove, ".log", false}, true}, // until a checkpoint drops it
	} {
		t.Run(st.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, sub := range []string{queueSub, tmpSub, corruptSub} {
				os.MkdirAll(filepath.Join(dir, sub), 0o700)
			}
			// b's files are there, as if its delete's unlinks were lost.
			os.WriteFile(filepath.Join(dir, queueSub, "b.eml"), bodyA, 0o600)
			os.WriteFile(filepath.Join(dir, queueSub, "b.json"), stateBytes(t, b1, bodyA), 0o600)
			writeSegment(t, dir, 1, seg)
			in := &injector{}
			in.arm(st.step, false)
			log, rec := newLog()
			s := openT(t, dir, Options{Fault: in.fault, Logger: log})
			if !in.disarm() {
				t.Fatal("the step was never reached")
			}
			if len(rec.levelled(slog.LevelError, "")) == 0 {
				t.Error("the failure was not logged at Error")
			}
			if got := files(t, dir, journalSub); slices.Contains(got, segName(1)) != st.kept {
				t.Errorf("journal/ = %v, generation 1 kept: want %v", got, st.kept)
			}
			s.Close()
			s2 := openT(t, dir, Options{})
			if got := listT(t, s2); !reflect.DeepEqual(got, []*Message{clone(a1)}) || !bytes.Equal(bodyT(t, s2, "a"), bodyA) {
				t.Errorf("after the next Open: %s", dump(got))
			}
			if got := files(t, dir, queueSub); !slices.Equal(got, []string{"a.eml", "a.json"}) {
				t.Errorf("queue/ = %v", got)
			}
			if got := files(t, dir, journalSub); len(got) != 1 {
				t.Errorf("journal/ = %v after a clean Open, want one generation", got)
			} else if b, _ := os.ReadFile(filepath.Join(dir, journalSub, got[0])); len(b) < len(segmentMagic) {
				t.Errorf("the new generation has no header")
			} else if recs, _, _ := parseSegment(b); len(recs) != 0 {
				t.Errorf("the new generation holds %d records: the old one was not replayed for good", len(recs))
			}
		})
	}
}
