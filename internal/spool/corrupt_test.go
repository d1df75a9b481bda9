package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOpenQuarantines damages entries in every way a crash, a full disk or
// bit rot can, and checks that Open moves each aside with a log line, loads
// the rest and cleans up debris, and that a second Open finds nothing more
// to do.
func TestOpenQuarantines(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	bad := []string{"truncstate", "garbage", "checksum", "emptystate", "version", "idmismatch", "truncbody", "nobody"}
	for i, id := range append([]string{"good1", "good2"}, bad...) {
		enqueueT(t, s, testMessage(id, t0, "a@example.com"), testBody(2048, uint64(i)))
	}
	s.Close()

	q := func(name string) string { return filepath.Join(dir, "queue", name) }
	read := func(name string) []byte {
		b, err := os.ReadFile(q(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(q(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st := read("truncstate.json")
	write("truncstate.json", st[:len(st)/2])
	write("garbage.json", []byte("\x00\xffnot json"))
	// Valid JSON, wrong checksum: a changed recipient.
	write("checksum.json", bytes.Replace(read("checksum.json"), []byte("a@example.com"), []byte("x@example.com"), 1))
	write("emptystate.json", nil)
	// A correct checksum but a format from the future.
	write("version.json", bytes.Replace(read("version.json"), []byte(`"version":1`), []byte(`"version":9`), 1))
	// A good state under another message's name.
	write("idmismatch.json", read("good1.json"))
	b := read("truncbody.eml")
	write("truncbody.eml", b[:len(b)-1])
	if err := os.Remove(q("nobody.eml")); err != nil {
		t.Fatal(err)
	}
	// Debris that is not damage: removed silently.
	write("orphan.eml", []byte("a body whose state was never committed"))
	if err := os.WriteFile(filepath.Join(dir, "tmp", "x.json.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not ours: left alone.
	write("README", []byte("hands off"))

	log, rec := newLog()
	s2, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got := ids(listT(t, s2)); !slices.Equal(got, []string{"good1", "good2"}) {
		t.Errorf("loaded %v, want the good ones", got)
	}
	want := slices.Sorted(slices.Values(bad))
	if got := rec.warned("corrupt"); !slices.Equal(got, want) {
		t.Errorf("quarantine log lines for %v, want %v", got, want)
	}
	var wantFiles []string
	for _, id := range bad {
		wantFiles = append(wantFiles, id+".json")
		if id != "nobody" {
			wantFiles = append(wantFiles, id+".eml")
		}
	}
	slices.Sort(wantFiles)
	if got := files(t, dir, "corrupt"); !slices.Equal(got, wantFiles) {
		t.Errorf("corrupt/ = %v\nwant %v", got, wantFiles)
	}
	if got := files(t, dir, "queue"); !slices.Equal(got, []string{"README", "good1.eml", "good1.json", "good2.eml", "good2.json"}) {
		t.Errorf("queue/ = %v", got)
	}
	if got := files(t, dir, "tmp"); len(got) != 0 {
		t.Errorf("tmp/ = %v", got)
	}
	s2.Close()

	log, rec = newLog()
	s3 := openT(t, dir, Options{Logger: log})
	if got := rec.warned("corrupt"); len(got) != 0 {
		t.Errorf("second Open quarantined %v", got)
	}
	// An ID that was quarantined can be used again, and quarantined again
	// without overwriting the first one's files.
	enqueueT(t, s3, testMessage("garbage", t0, "a@example.com"), []byte("x\r\n"))
	s3.Close()
	if err := os.WriteFile(q("garbage.json"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	openT(t, dir, Options{})
	if got := files(t, dir, "corrupt"); !slices.Contains(got, "garbage.1.json") || !slices.Contains(got, "garbage.json") {
		t.Errorf("corrupt/ = %v, want both generations of garbage", got)
	}
}

// TestBodyChecksum flips a bit in a body without changing its size, which
// Open does not look for: Body must refuse to return it, move it aside and
// take the message out of the queue.
func TestBodyChecksum(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	body := testBody(4096, 5)
	enqueueT(t, s, testMessage("m", t0, "a@example.com"), body)
	enqueueT(t, s, testMessage("ok", t0, "a@example.com"), body)
	s.Close()

	p := filepath.Join(dir, "queue", "m.eml")
	b, _ := os.ReadFile(p)
	b[1000] ^= 0x20
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}

	log, rec := newLog()
	s2 := openT(t, dir, Options{Logger: log})
	leased, _ := s2.Lease(ctx, t0, 10, time.Minute)
	if len(leased) != 2 {
		t.Fatalf("leased %v", ids(leased))
	}
	if _, err := s2.Body(ctx, "m"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Body of a damaged body = %v, want ErrCorrupt", err)
	}
	if got := rec.warned("corrupt"); !slices.Equal(got, []string{"m"}) {
		t.Errorf("logged %v", got)
	}
	if got := files(t, dir, "corrupt"); !slices.Equal(got, []string{"m.eml", "m.json"}) {
		t.Errorf("corrupt/ = %v", got)
	}
	if err := s2.Update(ctx, leased[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a quarantined message = %v, want ErrNotFound", err)
	}
	if got := ids(listT(t, s2)); !slices.Equal(got, []string{"ok"}) {
		t.Errorf("List = %v", got)
	}
	if !bytes.Equal(bodyT(t, s2, "ok"), body) {
		t.Error("the undamaged body changed")
	}
}

// TestBodyDamageWhileOpen damages a body behind an open store, where
// only Body's own check can see it: in its file (a body over
// journalBodyMax, returned as its file, or a smaller one once a checkpoint
// wrote its file, read whole into memory), and in the journal record that
// holds a body no checkpoint has written yet. Each damage must be refused
// with ErrCorrupt naming it and the message quarantined, with the damaged
// bytes (from the journal, for a body only there) and the state in
// corrupt/; an undamaged body is returned exactly.
func TestBodyDamageWhileOpen(t *testing.T) {
	type damage struct {
		name   string
		damage func(b []byte) []byte
		want   string // in the error; "" for no damage
	}
	fileDamages := []damage{
		{"none", func(b []byte) []byte { return b }, ""},
		{"bit flipped", func(b []byte) []byte { b[len(b)/2] ^= 0x20; return b }, "checksum"},
		{"one octet short", func(b []byte) []byte { return b[:len(b)-1] }, "state says"},
		{"one octet long", func(b []byte) []byte { return append(b, '\n') }, "state says"},
		{"empty", func(b []byte) []byte { return nil }, "state says"},
	}
	// In the journal the body's length is the state's: damage flips bits,
	// or cuts the segment short in the middle of the body.
	journalDamages := []damage{
		{"none", func(b []byte) []byte { return b }, ""},
		{"bit flipped", func(b []byte) []byte { b[len(b)/2] ^= 0x20; return b }, "checksum"},
		{"cut short", func(b []byte) []byte { return b[:len(b)/3] }, "state says"},
	}
	for _, size := range []int{4096, journalBodyMax, journalBodyMax + 4096} {
		for _, where := range []string{"journal", "file"} {
			damages := fileDamages
			if where == "journal" {
				if size > journalBodyMax {
					continue // never in the journal
				}
				damages = journalDamages
			}
			for _, d := range damages {
				t.Run(fmt.Sprintf("%d/%s/%s", size, where, d.name), func(t *testing.T) {
					ctx := context.Background()
					dir := t.TempDir()
					s := openT(t, dir, Options{})
					defer s.Close()
					body := testBody(size, 7)
					enqueueT(t, s, testMessage("m", t0, "a@example.com"), body)
					var damaged []byte
					if where == "journal" {
						damaged = damageJournalBody(t, s, "m", d.damage)
					} else {
						if size <= journalBodyMax {
							if err := checkpointNow(s); err != nil {
								t.Fatal(err)
							}
						}
						p := filepath.Join(dir, "queue", "m.eml")
						b, err := os.ReadFile(p)
						if err != nil {
							t.Fatal(err)
						}
						damaged = d.damage(b)
						if err := os.WriteFile(p, damaged, 0o600); err != nil {
							t.Fatal(err)
						}
					}
					rc, err := s.Body(ctx, "m")
					if d.want == "" {
						if err != nil {
							t.Fatalf("Body = %v", err)
						}
						got, err := io.ReadAll(rc)
						rc.Close()
						if err != nil || !bytes.Equal(got, body) {
							t.Fatalf("Body read %d octets (%v), want the %d enqueued", len(got), err, len(body))
						}
						return
					}
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), d.want) {
						t.Fatalf("Body = %v, want ErrCorrupt with %q", err, d.want)
					}
					if _, err := s.Body(ctx, "m"); !errors.Is(err, ErrNotFound) {
						t.Errorf("Body after the quarantine = %v, want ErrNotFound", err)
					}
					if got := files(t, dir, "corrupt"); !slices.Equal(got, []string{"m.eml", "m.json"}) {
						t.Fatalf("corrupt/ = %v", got)
					}
					if got, _ := os.ReadFile(filepath.Join(dir, "corrupt", "m.eml")); !bytes.Equal(got, damaged) {
						t.Errorf("corrupt/m.eml holds %d octets, not the %d damaged ones", len(got), len(damaged))
					}
					if got := files(t, dir, "queue"); len(got) != 0 {
						t.Errorf("queue/ = %v after the quarantine", got)
					}
				})
			}
		}
	}
}

// damageJournalBody applies damage to the body of message id where the
// journal holds it, in the segment file behind the open store, and
// returns the damaged bytes; damage may flip bytes or cut the body (then
// the segment is cut there).
func damageJournalBody(t *testing.T, s *Store, id string, damage func([]byte) []byte) []byte {
	t.Helper()
	s.mu.Lock()
	e := s.entries[id]
	seg, off, size := e.jbody, e.jboff, e.body.size
	s.mu.Unlock()
	if seg == nil {
		t.Fatalf("the body of %s is not in the journal", id)
	}
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	d := damage(b)
	if _, err := f.WriteAt(d, off); err != nil {
		t.Fatal(err)
	}
	if len(d) < len(b) {
		if err := f.Truncate(off + int64(len(d))); err != nil {
			t.Fatal(err)
		}
	}
	return d
}
