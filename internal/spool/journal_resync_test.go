package spool

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// attrs returns attribute key of every record at level whose message
// contains msg, in the order logged.
func (r *logRecorder) attrs(level slog.Level, msg, key string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.records {
		if rec.Level != level || !bytes.Contains([]byte(rec.Message), []byte(msg)) {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out = append(out, a.Value.Int64())
			}
			return true
		})
	}
	return out
}

// TestReplayResync damages a journal in the middle in every way the
// brief of resynchronisation names and checks what Open brings back,
// exactly: the messages (states byte for byte in their files, bodies byte
// for byte through Body), the ranges reported as skipped (offset and
// length, one Warn each), the messages reported as uncertain (their last
// record before the damage) and as known (after it), the segment copied
// to corrupt/, and a second Open that finds the same and warns about
// nothing.
//
// The journal: a1 (Enqueue), b1 (Enqueue), c1 (Enqueue), a2 (Update of a),
// a tombstone of c, d1 (Enqueue). Undamaged it replays to a2, b1, d1.
func TestReplayResync(t *testing.T) {
	bodyA, bodyB, bodyC, bodyD := testBody(2048, 1), testBody(700, 2), testBody(3000, 3), testBody(100, 4)
	a1 := testMessage("a", t0, "x@example.com", "y@example.com")
	a2 := clone(a1)
	a2.Recipients = a2.Recipients[1:]
	a2.Recipients[0].Attempts = 1
	b1 := testMessage("b", t0, "z@example.com")
	c1 := testMessage("c", t0, "w@example.com")
	d1 := testMessage("d", t0, "v@example.com")
	recs := []jrec{
		{kind: recBody, m: a1, body: bodyA},
		{kind: recBody, m: b1, body: bodyB},
		{kind: recBody, m: c1, body: bodyC},
		{kind: recState, m: a2, body: bodyA},
		{kind: recTomb, id: "c"},
		{kind: recBody, m: d1, body: bodyD},
	}
	const (
		rA1 = iota
		rB1
		rC1
		rA2
		rTombC
		rD1
	)
	seg := slices.Clone(segmentMagic)
	var at [][2]int // each record's [start, end)
	for _, r := range recs {
		start := len(seg)
		seg = append(seg, r.encode(t)...)
		at = append(at, [2]int{start, len(seg)})
	}
	bodies := map[string][]byte{"a": bodyA, "b": bodyB, "c": bodyC, "d": bodyD}
	zeros := make([]byte, 8192)

	type skip struct{ off, n int }
	whole := func(i int) skip { return skip{at[i][0], at[i][1] - at[i][0]} }
	cases := []struct {
		name      string
		damage    func(s []byte) []byte // gets a copy of the segment
		want      []*Message            // in List's order
		skips     []skip
		uncertain []string // live, last record before the damage
		known     []string // live, last record after it
		salvaged  []string // records salvaged from a skipped range (salvage)
		torn      bool
		corrupt   []string // besides the segment's copy, when skips
	}{{
		name:      "flipped byte in a record's payload",
		damage:    func(s []byte) []byte { s[at[rB1][0]+300] ^= 0x10; return s },
		want:      []*Message{a2, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "d"},
	}, {
		name:      "length field huge",
		damage:    func(s []byte) []byte { s[at[rB1][0]] = 0xff; return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"b"},
	}, {
		name:      "length field plausible but past the end of the segment",
		damage:    func(s []byte) []byte { s[at[rB1][0]+1] = 0x03; return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"b"},
	}, {
		name:      "length field small",
		damage:    func(s []byte) []byte { s[at[rB1][0]+2], s[at[rB1][0]+3] = 0, 40; return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"b"},
	}, {
		name:      "length field zero",
		damage:    func(s []byte) []byte { clear(s[at[rB1][0] : at[rB1][0]+4]); return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"b"},
	}, {
		name:      "flipped byte in the checksum",
		damage:    func(s []byte) []byte { s[at[rB1][0]+5] ^= 0x80; return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rB1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"b"},
	}, {
		// Over the end of b's Enqueue and the start of c's: b's state
		// vouches for itself and is salvaged, its body does not, so the
		// scan quarantines it (state in corrupt/ for an operator); c is
		// lost, and its tombstone after the damage keeps it gone anyway.
		name: "a run of garbage bytes across two records",
		damage: func(s []byte) []byte {
			for i := at[rB1][1] - 50; i < at[rB1][1]+50; i++ {
				s[i] = 0xa5
			}
			return s
		},
		want:      []*Message{a2, d1},
		skips:     []skip{{at[rB1][0], at[rC1][1] - at[rB1][0]}},
		uncertain: []string{"b"}, // salvaged at the start of the damage: a later change may be after it
		known:     []string{"a", "d"},
		salvaged:  []string{"b"},
		corrupt:   []string{"b.json"},
	}, {
		name:      "a run of zeros in the middle is not the end",
		damage:    func(s []byte) []byte { clear(s[at[rC1][0]:at[rC1][1]]); return s },
		want:      []*Message{a2, b1, d1},
		skips:     []skip{whole(rC1)},
		uncertain: []string{"b"},
		known:     []string{"a", "d"},
	}, {
		name: "garbage inserted between two records",
		damage: func(s []byte) []byte {
			return slices.Insert(s, at[rA2][0], bytes.Repeat([]byte("garbage!"), 20)...)
		},
		want:      []*Message{a2, b1, d1},
		skips:     []skip{{at[rA2][0], 160}},
		uncertain: []string{"b"},
		known:     []string{"a", "d"},
	}, {
		// a's Enqueue, with the only copy of its body, is lost; its
		// Update survives, so its state comes back without a body and the
		// scan quarantines it for an operator instead of guessing.
		name:      "damage in the first record",
		damage:    func(s []byte) []byte { s[at[rA1][0]+100] ^= 1; return s },
		want:      []*Message{b1, d1},
		skips:     []skip{whole(rA1)},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		corrupt:   []string{"a.json"},
	}, {
		// c's delivery is lost: c comes back, to be sent again (a
		// duplicate rather than a loss), and is reported as uncertain.
		name:      "a tombstone lost",
		damage:    func(s []byte) []byte { s[at[rTombC][0]+9] ^= 0x04; return s },
		want:      []*Message{a2, b1, c1, d1},
		skips:     []skip{whole(rTombC)},
		uncertain: []string{"a", "b", "c"},
		known:     []string{"d"},
	}, {
		// The header is skipped and the first record salvaged: its frame
		// is damaged, its state and body are whole.
		name: "the segment header and the first record's checksum",
		damage: func(s []byte) []byte {
			s[1] ^= 0x02
			s[at[rA1][0]+4] ^= 0x01
			return s
		},
		want:      []*Message{a2, b1, d1},
		skips:     []skip{{0, at[rA1][1]}},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
		salvaged:  []string{"a"},
	}, {
		name: "the segment header",
		damage: func(s []byte) []byte {
			s[2] ^= 0x20
			return s
		},
		want:      []*Message{a2, b1, d1},
		skips:     []skip{{0, len(segmentMagic)}},
		uncertain: []string{},
		known:     []string{"a", "b", "d"},
	}, {
		// b's Enqueue and a's Update are lost: a comes back as its
		// Enqueue left it.
		name: "two damaged regions",
		damage: func(s []byte) []byte {
			s[at[rB1][0]+200] ^= 0x02
			s[at[rA2][0]+100] ^= 0x40 // in its state: not salvaged
			return s
		},
		want:      []*Message{a1, d1},
		skips:     []skip{whole(rB1), whole(rA2)},
		uncertain: []string{"a"},
		known:     []string{"d"},
	}, {
		// A bad last record whose length holds, with only zeros after it,
		// is what an append cut short leaves (the disk wrote some of its
		// sectors): a torn tail, never acknowledged, not reported as
		// damage. A flip in an acknowledged last record looks the same;
		// the record is lost either way, since nothing follows it.
		name: "damage in the last record, zeros after it: torn",
		damage: func(s []byte) []byte {
			s[at[rD1][1]-10] ^= 1
			return append(s, zeros...)
		},
		want: []*Message{a2, b1},
		torn: true,
	}, {
		// With its length unusable the record's end is unknown, so it is
		// reported as damage: the records are the same, only the report
		// differs.
		name: "the last record's length zeroed, zeros after it: damage",
		damage: func(s []byte) []byte {
			clear(s[at[rD1][0] : at[rD1][0]+4])
			return append(s, zeros...)
		},
		want:      []*Message{a2, b1},
		skips:     []skip{whole(rD1)},
		uncertain: []string{"a", "b"},
		known:     []string{},
	}, {
		name: "damage in the middle and a torn tail",
		damage: func(s []byte) []byte {
			s[at[rC1][0]+500] ^= 0x08
			return s[:at[rD1][1]-20]
		},
		want:      []*Message{a2, b1},
		skips:     []skip{whole(rC1)},
		uncertain: []string{"b"},
		known:     []string{"a"},
		salvaged:  []string{"c"}, // its state only: its body is damaged, and its tombstone follows
		torn:      true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, sub := range []string{queueSub, tmpSub, corruptSub} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			writeSegment(t, dir, 1, tc.damage(slices.Clone(seg)))
			log, rec := newLog()
			s := openT(t, dir, Options{Logger: log})
			defer s.Close()
			holdsExactly(t, "after replay", s, tc.want)
			for _, m := range tc.want {
				if b := bodyT(t, s, m.ID); !bytes.Equal(b, bodies[m.ID]) {
					t.Errorf("body of %s differs", m.ID)
				}
				st, err := os.ReadFile(filepath.Join(dir, queueSub, m.ID+extState))
				if err != nil || !bytes.Equal(st, stateBytes(t, m, bodies[m.ID])) {
					t.Errorf("state file of %s is not its last record's state (err %v)", m.ID, err)
				}
			}

			offs := rec.attrs(slog.LevelWarn, "damaged journal bytes skipped", "offset")
			lens := rec.attrs(slog.LevelWarn, "damaged journal bytes skipped", "length")
			var gotSkips []skip
			for i := range offs {
				gotSkips = append(gotSkips, skip{int(offs[i]), int(lens[i])})
			}
			if !slices.Equal(gotSkips, tc.skips) {
				t.Errorf("skipped ranges reported %v, want %v", gotSkips, tc.skips)
			}
			if tc.skips != nil {
				if g := rec.warned("from before damaged journal bytes"); !slices.Equal(nonNil(g), tc.uncertain) {
					t.Errorf("uncertain messages reported %v, want %v", g, tc.uncertain)
				}
				if g := rec.warned("from after damaged journal bytes"); !slices.Equal(nonNil(g), tc.known) {
					t.Errorf("known messages reported %v, want %v", g, tc.known)
				}
			}
			if g := rec.warned("salvaged from damaged bytes"); !slices.Equal(nonNil(g), nonNil(tc.salvaged)) {
				t.Errorf("salvaged records %v, want %v", g, tc.salvaged)
			}
			if w := rec.levelled(slog.LevelWarn, "journal"); (len(w) != 0) != (tc.skips != nil) {
				t.Errorf("warnings about the journal: %v, want some: %v", w, tc.skips != nil)
			}
			if i := rec.levelled(slog.LevelInfo, "unfinished append"); (len(i) != 0) != tc.torn {
				t.Errorf("torn-tail notes: %v, want some: %v", i, tc.torn)
			}
			if e := rec.levelled(slog.LevelError, ""); len(e) != 0 {
				t.Errorf("errors logged: %v", e)
			}
			wantCorrupt := slices.Clone(tc.corrupt)
			if tc.skips != nil {
				wantCorrupt = append(wantCorrupt, "journal-0000000000000001.log")
			}
			slices.Sort(wantCorrupt)
			if c := files(t, dir, corruptSub); !slices.Equal(nonNil(c), nonNil(wantCorrupt)) {
				t.Errorf("corrupt/ = %v, want %v", c, wantCorrupt)
			}
			s.Close()

			log, rec = newLog()
			s2 := openT(t, dir, Options{Logger: log})
			defer s2.Close()
			holdsExactly(t, "second Open", s2, tc.want)
			if w := rec.levelled(slog.LevelWarn, ""); len(w) != 0 {
				t.Errorf("second Open warned: %v", w)
			}
		})
	}
}

// TestReplayResyncGenerations damages the first of two generations: the
// records before and after the damage in it come back, and so does the
// next generation, whose records are all after the damage; a message whose
// last record is in the first generation before the damage is uncertain.
func TestReplayResyncGenerations(t *testing.T) {
	bodyA, bodyB := testBody(2048, 1), testBody(900, 2)
	a1 := testMessage("a", t0, "x@example.com")
	b1 := testMessage("b", t0, "y@example.com")
	c1 := testMessage("c", t0, "z@example.com")
	d1 := testMessage("d", t0, "w@example.com")
	gen1 := segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}, jrec{kind: recBody, m: b1, body: bodyB},
		jrec{kind: recBody, m: c1, body: bodyA})
	first := len(segmentOf(t, jrec{kind: recBody, m: a1, body: bodyA}))
	gen1[first+50] ^= 0x01 // inside b's record
	gen2 := segmentOf(t, jrec{kind: recBody, m: d1, body: bodyB}, jrec{kind: recTomb, id: "c"})
	dir := t.TempDir()
	writeSegment(t, dir, 1, gen1)
	writeSegment(t, dir, 2, gen2)
	log, rec := newLog()
	s := openT(t, dir, Options{Logger: log})
	defer s.Close()
	if got := ids(listT(t, s)); !slices.Equal(got, []string{"a", "d"}) {
		t.Fatalf("after replay: %v, want a and d", got)
	}
	if !bytes.Equal(bodyT(t, s, "a"), bodyA) || !bytes.Equal(bodyT(t, s, "d"), bodyB) {
		t.Error("a body differs")
	}
	if g := rec.warned("from before damaged journal bytes"); !slices.Equal(g, []string{"a"}) {
		t.Errorf("uncertain: %v, want a", g)
	}
	if g := rec.warned("from after damaged journal bytes"); !slices.Equal(g, []string{"d"}) {
		t.Errorf("known: %v, want d", g)
	}
	if c := files(t, dir, corruptSub); !slices.Equal(c, []string{"journal-0000000000000001.log"}) {
		t.Errorf("corrupt/ = %v", c)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// TestReplayResyncStore damages a journal the store itself wrote, as a
// process killed before any checkpoint leaves it (records from group
// commits, zeros preallocated after them): a flip in one message's body
// and in another's length field. Open brings back every other message byte
// for byte, the second one whole (salvaged), and loses only the first,
// naming it in the skipped range's log line, its state set aside in
// corrupt/.
func TestReplayResyncStore(t *testing.T) {
	dir := t.TempDir()
	s, kill := openKillable(t, dir)
	const n = 30
	bodies := map[string][]byte{}
	var msgs []*Message
	for i := range n {
		id := "m" + strconv.Itoa(i)
		m := testMessage(id, t0, "r"+strconv.Itoa(i)+"@example.com")
		bodies[id] = testBody(500+97*i, uint64(i))
		enqueueT(t, s, m, bodies[id])
		msgs = append(msgs, m)
	}
	gen := func() string { s.j.mu.Lock(); defer s.j.mu.Unlock(); return s.j.seg.path }()
	kill() // no checkpoint: every message only in the journal

	data, err := os.ReadFile(gen)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := parseSegment(data)
	if err != nil || len(recs) != n {
		t.Fatalf("the store's segment: %d records, %v", len(recs), err)
	}
	if nonZeroEnd(data) == len(data) {
		t.Fatal("no zeros preallocated after the records")
	}
	lost, whole := recs[10], recs[20]
	data[lost.off+int(recBodyOffset(lost.id, len(lost.state)))+50] ^= 0x01
	binary.BigEndian.PutUint32(data[whole.off:], 7) // too small to hold anything
	if err := os.WriteFile(gen, data, 0o600); err != nil {
		t.Fatal(err)
	}

	log, rec := newLog()
	s2 := openT(t, dir, Options{Logger: log})
	defer s2.Close()
	var want []*Message
	for _, m := range msgs {
		if m.ID != lost.id {
			want = append(want, clone(m))
		}
	}
	slices.SortFunc(want, func(a, b *Message) int { return strings.Compare(a.ID, b.ID) })
	got := listT(t, s2)
	slices.SortFunc(got, func(a, b *Message) int { return strings.Compare(a.ID, b.ID) })
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after replay %v, want every message but %s", ids(got), lost.id)
	}
	for _, m := range want {
		if !bytes.Equal(bodyT(t, s2, m.ID), bodies[m.ID]) {
			t.Errorf("body of %s differs", m.ID)
		}
	}
	offs := rec.attrs(slog.LevelWarn, "damaged journal bytes skipped", "offset")
	if !slices.Equal(offs, []int64{int64(lost.off), int64(whole.off)}) {
		t.Errorf("skipped ranges at %v, want at %d and %d", offs, lost.off, whole.off)
	}
	// The first one's state vouches for itself, its body does not: the
	// state is salvaged, and the scan quarantines it without a body.
	if g := rec.warned("salvaged from damaged bytes"); !slices.Equal(g, []string{lost.id, whole.id}) {
		t.Errorf("salvaged %v, want %s and %s", g, lost.id, whole.id)
	}
	if c := files(t, dir, corruptSub); !slices.Equal(c, []string{"journal-" + strings.TrimSuffix(filepath.Base(gen), ".log") + ".log", lost.id + extState}) {
		t.Errorf("corrupt/ = %v, want the segment and %s's state", c, lost.id)
	}
	var claimed []string
	rec.mu.Lock()
	for _, r := range rec.records {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "claimed_id" {
				claimed = append(claimed, a.Value.String())
			}
			return true
		})
	}
	rec.mu.Unlock()
	if !slices.Equal(claimed, []string{lost.id, whole.id}) {
		t.Errorf("claimed IDs of the skipped ranges %v, want %s and %s", claimed, lost.id, whole.id)
	}
}

// BenchmarkParseSegment parses a segment of 2 KiB Enqueue records as Open
// reads it (4 MiB of records, 4 MiB of preallocated zeros): whole, and with
// 1 MiB of random bytes over its middle, which the parser skips octet by
// octet looking for the next frame. Compare the two in one run.
func BenchmarkParseSegment(b *testing.B) {
	t := &testing.T{}
	body := testBody(2048, 1)
	seg := slices.Clone(segmentMagic)
	for i := 0; len(seg) < 4<<20; i++ {
		m := testMessage("m"+strconv.Itoa(i), t0, "a@example.com")
		seg = append(seg, jrec{kind: recBody, m: m, body: body}.encode(t)...)
	}
	seg = append(seg, make([]byte, 4<<20)...)
	damaged := slices.Clone(seg)
	noise := testBody(1<<20, 2) // printable: like a body's bytes
	for i := range noise {
		noise[i] ^= byte(i * 131)
	}
	copy(damaged[1<<20:], noise)
	for _, c := range []struct {
		name string
		data []byte
	}{{"whole", seg}, {"1MiB-damaged", damaged}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			for range b.N {
				recs, _, _ := parseSegment(c.data)
				if len(recs) == 0 {
					b.Fatal("no records")
				}
			}
		})
	}
}
