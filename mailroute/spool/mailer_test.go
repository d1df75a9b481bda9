package spool_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/mailtest"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// greylistForever defers every recipient, as a greylister that never
// clears would.
func greylistForever(string) *mailtest.Reply {
	return &mailtest.Reply{Code: 450, Enhanced: [3]int{4, 2, 0}, Message: "Greylisted, please try again later"}
}

func send(m *mailroute.Mailer, from string, to []string, body string) (*mailroute.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return m.Send(ctx, from, to, strings.NewReader(body))
}

func wantStatus(t *testing.T, res *mailroute.Result, rcpt string, st mailroute.Status) mailroute.RecipientResult {
	t.Helper()
	for _, r := range res.Recipients {
		if r.Rcpt == rcpt {
			if r.Status != st {
				t.Errorf("%s: status %v (err %v), want %v", rcpt, r.Status, r.Err, st)
			}
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", rcpt, res.Recipients)
	return mailroute.RecipientResult{}
}

// Shutdown with a deadline during an attempt leaves the recipient in the
// directory: a Store opened on it afterwards, as after a restart, still
// holds it, untouched.
func TestShutdownMidAttemptKeepsMail(t *testing.T) {
	w := newWorld(t, mailtest.Options{Delay: 3 * time.Second})
	dir := t.TempDir()
	sp := &spool.Store{Dir: dir}
	m := w.mailer(t, sp, mailroute.Config{})
	if _, err := m.Enqueue(context.Background(), "a@sender.test", []string{"x@dest.test"}, strings.NewReader(testBody)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.mx.Connections() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // waiting for the slow server's reply
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := m.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned before the slow attempt ended")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	again := &spool.Store{Dir: dir}
	defer again.Close()
	list, err := again.List(context.Background())
	if err != nil || len(list) != 1 || len(list[0].Recipients) != 1 {
		t.Fatalf("after shutdown: %+v, %v", list, err)
	}
	if r := list[0].Recipients[0]; r.Rcpt != "x@dest.test" || r.Attempts != 0 {
		t.Errorf("the recipient whose outcome is unknown changed: %+v", r)
	}
	if n := len(w.mx.Messages()); n != 0 {
		t.Errorf("the MX accepted %d messages", n)
	}
}

// A full disk: Send says the deferred recipient is not queued, and the
// store stays consistent (it reopens, holding only complete messages).
func TestSendDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; internal/spool's own tests inject the write error instead")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()

	w := newWorld(t, mailtest.Options{Refuse: greylistForever})
	sp := &spool.Store{Dir: dir}
	// The first retry is minutes away: the workers leave the queue alone.
	m := w.mailer(t, sp, mailroute.Config{})
	small, err := send(m, "a@sender.test", []string{"small@dest.test"}, testBody)
	if err != nil {
		t.Fatalf("a small message should fit: %v", err)
	}
	wantStatus(t, small, "small@dest.test", mailroute.Queued)

	big := testBody + strings.Repeat(strings.Repeat("x", 500)+"\r\n", 300) // ~150 KiB
	res, err := send(m, "a@sender.test", []string{"big@dest.test"}, big)
	if err == nil {
		t.Fatal("Send reported no error though the queue could not store the message")
	}
	r := wantStatus(t, res, "big@dest.test", mailroute.Deferred)
	if !errors.Is(r.Err, syscall.ENOSPC) || !strings.Contains(r.Err.Error(), "not queued") {
		t.Errorf("err %v, want ENOSPC and 'not queued'", r.Err)
	}
	m.Close()
	sp.Close()

	again := &spool.Store{Dir: dir}
	defer again.Close()
	list, err := again.List(context.Background())
	if err != nil || len(list) != 1 || list[0].Recipients[0].Rcpt != "small@dest.test" {
		t.Fatalf("after the disk filled: %+v, %v", list, err)
	}
	rc, err := again.Body(context.Background(), list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if string(got) != testBody {
		t.Errorf("stored body %q", got)
	}
}
