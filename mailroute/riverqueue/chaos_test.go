package riverqueue_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/internal/dnstest"
	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
	"github.com/mailroute/go-mailroute/mailroute/spool"
)

// chaosConfig sizes a chaos run.
type chaosConfig struct {
	messages int           // in all; a quarter on the spool store
	chaos    time.Duration // how long the driver signals, kills and restarts
	drain    time.Duration // then, how long the queues get to empty
}

// TestChaos runs three Mailer processes on one River database and one on a
// spool.Store (re-executions of this test binary: TestChaosChild), against an MX
// that answers after random delays, defers now and then and sometimes
// hangs up after the final dot. A driver enqueues 1,000 messages (1 to 3
// recipients each) and meanwhile flushes, shuts down (with little
// patience), SIGKILLs and restarts the processes at random. Then it lets
// the queues drain and stops every process gracefully.
//
// Afterwards every recipient has arrived and both queues are empty; a copy
// the sender was told was accepted and saved is never followed by another;
// a copy accepted by a process that neither reported it nor died or was cut
// short is a lie about an outcome; and every duplicate has a window that
// explains it: a hang-up after the final dot (injected by the MX and
// counted), a process killed or shut down impatiently after the server
// took a copy (unknown to the sender), or a save the sender reported as
// failed.
//
// CI mode takes about a minute; MAILROUTE_CHAOS_LONG=1 runs 5,000 messages
// under four minutes of chaos. Both need PostgreSQL (MAILROUTE_PEERS=1).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: not in -short")
	}
	cfg := chaosConfig{messages: 1000, chaos: 25 * time.Second, drain: 75 * time.Second}
	if os.Getenv("MAILROUTE_CHAOS_LONG") == "1" {
		cfg = chaosConfig{messages: 5000, chaos: 4 * time.Minute, drain: 5 * time.Minute}
	}
	pool := newDB(t)
	ctx := context.Background()
	if err := (&riverqueue.Store{Pool: pool}).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var schema string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	mx := startChaosMX(t, 0.05, 0.02, 0.02, 40*time.Millisecond)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	const domains = 5
	for d := range domains {
		dns.MX(fmt.Sprintf("d%d.test", d), "mx.chaos.test")
	}
	dns.Host("mx.chaos.test", "127.0.0.1")

	// The messages: a quarter into the spool store before its process starts,
	// the rest into River while the chaos runs.
	expected := map[string]int{} // recipient → message number
	msgs := make([]*mailroute.QueuedMessage, cfg.messages)
	for n := range msgs {
		now := time.Now()
		m := &mailroute.QueuedMessage{From: "app@sender.test", Created: now}
		for k := range 1 + rand.N(3) {
			r := fmt.Sprintf("m%dr%d@d%d.test", n, k, rand.N(domains))
			expected[r] = n
			m.Recipients = append(m.Recipients, mailroute.QueuedRecipient{Rcpt: r, Queued: now, NextAttempt: now})
		}
		msgs[n] = m
	}
	spoolDir := t.TempDir()
	nSpool := cfg.messages / 4
	sp := &spool.Store{Dir: spoolDir, NoSync: true}
	for n := range nSpool {
		if err := sp.Enqueue(ctx, msgs[n], strings.NewReader(chaosBody(n))); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()

	d := &chaosDriver{t: t, incs: map[string]*incarnation{}, env: []string{
		envChaosDNS + "=" + dns.Addr, envChaosPort + "=" + mx.port(), envChaosLease + "=3s",
	}}
	stores := []string{"river:" + schema, "river:" + schema, "river:" + schema, "spool:" + spoolDir}
	for i, s := range stores {
		p := &process{index: i, store: s}
		d.procs = append(d.procs, p)
		d.start(p)
	}
	defer d.killAll()

	// Enqueue River's share over the first 60% of the chaos.
	enqueued := make(chan error, 1)
	go func() {
		store := &riverqueue.Store{Pool: pool}
		gap := time.Duration(float64(cfg.chaos) * 0.6 / float64(cfg.messages-nSpool))
		for n := nSpool; n < cfg.messages; n++ {
			if err := store.Enqueue(ctx, msgs[n], strings.NewReader(chaosBody(n))); err != nil {
				enqueued <- err
				return
			}
			time.Sleep(gap)
		}
		enqueued <- nil
	}()

	// Chaos.
	var kills, shutdowns, flushes int
	end := time.Now().Add(cfg.chaos)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(50+rand.N(250)) * time.Millisecond)
		p := d.procs[rand.N(len(d.procs))]
		switch x := rand.Float64(); {
		case x < 0.5:
			if d.signal(p, syscall.SIGUSR1) {
				flushes++
			}
		case x < 0.65:
			if d.signal(p, syscall.SIGTERM) {
				shutdowns++
				d.wait(p)
				d.start(p)
			}
		case x < 0.85:
			if d.signal(p, syscall.SIGKILL) {
				kills++
				d.wait(p)
				time.Sleep(time.Duration(rand.N(300)) * time.Millisecond)
				d.start(p)
			}
		}
	}
	if err := <-enqueued; err != nil {
		t.Fatalf("enqueue: %v", err)
	}

	// Drain: every recipient arrived, River's queue and the spool store's empty.
	river := &riverqueue.Store{Pool: pool}
	drainEnd := time.Now().Add(cfg.drain)
	for {
		copies, _ := mx.snapshot()
		missing := 0
		for r := range expected {
			if len(copies[r]) == 0 {
				missing++
			}
		}
		l, err := river.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		spoolLeft := d.spoolLen(d.procs[3])
		if missing == 0 && len(l) == 0 && spoolLeft == 0 {
			break
		}
		if time.Now().After(drainEnd) {
			t.Errorf("after %v of draining: %d recipients never arrived, %d messages in River, %d recipients in the spool store", cfg.drain, missing, len(l), spoolLeft)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range d.procs {
		d.signal(p, syscall.SIGINT)
	}
	for _, p := range d.procs {
		d.wait(p)
	}
	d.check(t, mx, expected, chaosCounts{kills: kills, shutdowns: shutdowns, flushes: flushes, messages: cfg.messages})
	if l, err := river.List(ctx); err != nil || len(l) != 0 {
		t.Errorf("River still holds %d messages (%v)", len(l), err)
	}
	again := &spool.Store{Dir: spoolDir, NoSync: true}
	if l, err := again.List(ctx); err != nil || len(l) != 0 {
		t.Errorf("the spool store still holds %d messages (%v)", len(l), err)
	}
	again.Close()
}

func chaosBody(n int) string {
	return fmt.Sprintf("From: app@sender.test\r\nSubject: chaos %d\r\n\r\nchaos message %d\r\n", n, n)
}

// process is one of the four Mailer processes; each start is a new
// incarnation with its own EHLO name.
type process struct {
	index, inc int
	store      string
	cmd        *exec.Cmd
	cur        *incarnation
	exited     chan struct{}
}

// incarnation is what one run of a process told the driver.
type incarnation struct {
	name      string
	ready     bool
	delivered map[string]bool // "D": delivered and saved
	notSaved  map[string]bool // "N"
	unknown   map[string]bool // "U": deferred with the outcome unknown after the data
	graceful  bool            // stopped by SIGINT and said goodbye
	cut       bool            // SIGKILL, or SIGTERM with little patience
	queueLen  int             // the last "L"
	other     []string        // "X" lines: outcomes that must not happen
	stderr    bytes.Buffer
	exitErr   error
}

type chaosDriver struct {
	t     *testing.T
	env   []string
	procs []*process
	mu    sync.Mutex
	incs  map[string]*incarnation
}

func (d *chaosDriver) start(p *process) {
	d.t.Helper()
	p.inc++
	in := &incarnation{name: fmt.Sprintf("p%d-i%d.chaos.test", p.index, p.inc), delivered: map[string]bool{}, notSaved: map[string]bool{}, unknown: map[string]bool{}, queueLen: -1}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChaosChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Env = append(cmd.Env, envChaosChild+"="+in.name, envChaosStore+"="+p.store,
		envChaosTermMs+"="+strconv.Itoa(rand.N(400)))
	cmd.Stderr = &in.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.mu.Lock()
	d.incs[in.name] = in
	d.mu.Unlock()
	p.cmd, p.cur, p.exited = cmd, in, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			d.line(in, sc.Text(), ready)
		}
		err := cmd.Wait()
		d.mu.Lock()
		in.exitErr = err
		d.mu.Unlock()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		d.t.Fatalf("%s exited before it was ready: %s", in.name, in.stderr.String())
	case <-time.After(30 * time.Second):
		d.t.Fatalf("%s not ready in 30 s", in.name)
	}
}

func (d *chaosDriver) line(in *incarnation, l string, ready chan struct{}) {
	kind, rest, _ := strings.Cut(l, " ")
	d.mu.Lock()
	defer d.mu.Unlock()
	switch kind {
	case "R":
		in.ready = true
		close(ready)
	case "D":
		in.delivered[rest] = true
	case "N":
		in.notSaved[rest] = true
	case "U":
		in.unknown[rest] = true
	case "L":
		in.queueLen, _ = strconv.Atoi(rest)
	case "B":
		in.graceful = !in.cut
	case "X":
		in.other = append(in.other, rest)
	}
}

// signal sends sig to p's running incarnation and reports whether it did.
func (d *chaosDriver) signal(p *process, sig syscall.Signal) bool {
	if p.cmd == nil || p.cmd.Process == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		d.mu.Lock()
		p.cur.cut = true
		d.mu.Unlock()
	}
	return p.cmd.Process.Signal(sig) == nil
}

func (d *chaosDriver) wait(p *process) {
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		d.t.Fatalf("%s did not exit", p.cur.name)
	}
}

func (d *chaosDriver) killAll() {
	for _, p := range d.procs {
		if p.cmd != nil && p.cmd.Process != nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

// spoolLen is the spool store process's last reported queue length, -1 unknown.
func (d *chaosDriver) spoolLen(p *process) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return p.cur.queueLen
}

type chaosCounts struct{ kills, shutdowns, flushes, messages int }

// check compares what arrived with what the processes reported.
func (d *chaosDriver) check(t *testing.T, mx *chaosMX, expected map[string]int, c chaosCounts) {
	copies, drops := mx.snapshot()
	d.mu.Lock()
	defer d.mu.Unlock()
	var losses, dups, dropWindows, cutWindows, notSavedWindows, unknownWindows, lies, afterSaved, unexplained, badBody int
	var dupAfterDrop, dupAfterCut, dupAfterNotSaved int // what the copy before each duplicate was
	for r, n := range expected {
		cs := copies[r]
		if len(cs) == 0 {
			losses++
			continue
		}
		dups += len(cs) - 1
		explained, saved := 0, false
		for i, cp := range cs {
			if !strings.Contains(cp.body, fmt.Sprintf("chaos message %d\r\n", n)) {
				badBody++
			}
			in := d.incs[cp.helo]
			// Copies are in the order their transactions began (see
			// mxCopy.seq): none may begin after a saved delivery.
			if saved {
				afterSaved++
				t.Errorf("%s: copy %d (from %s) came after a copy whose delivery was saved", r, i+1, cp.helo)
			}
			last := i == len(cs)-1
			switch {
			case last:
			case cp.dropped:
				dupAfterDrop++
			case in != nil && in.notSaved[r]:
				dupAfterNotSaved++
			case in != nil && in.cut && !in.delivered[r]:
				dupAfterCut++
			}
			switch {
			case in == nil:
				t.Errorf("%s: a copy from unknown sender %q", r, cp.helo)
			case cp.dropped:
				explained++
				dropWindows++
			case in.unknown[r] && !in.delivered[r]:
				explained++
				unknownWindows++
			case in.delivered[r] && !in.notSaved[r]:
				saved = true
			case in.notSaved[r]:
				explained++
				notSavedWindows++
			case in.cut:
				explained++
				cutWindows++
			default:
				lies++
				t.Errorf("%s: %s got the server's acceptance and never reported it, though it was not cut short", r, cp.helo)
			}
		}
		if len(cs)-1 > explained {
			unexplained++
			t.Errorf("%s: %d copies, only %d explained by a window", r, len(cs), explained)
		}
	}
	for name, in := range d.incs {
		for _, x := range in.other {
			t.Errorf("%s reported %s", name, x)
		}
		if in.graceful && in.exitErr != nil || strings.Contains(in.stderr.String(), "DATA RACE") || strings.Contains(in.stderr.String(), "panic:") {
			t.Errorf("%s: exit %v; stderr:\n%s", name, in.exitErr, in.stderr.String())
		}
	}
	for r := range copies {
		if _, ok := expected[r]; !ok {
			t.Errorf("an unexpected recipient arrived: %s", r)
		}
	}
	if badBody > 0 {
		t.Errorf("%d copies with the wrong body", badBody)
	}
	t.Logf("chaos: %d messages, %d recipients; %d processes started (%d kills, %d impatient shutdowns, %d flushes); "+
		"windows: %d injected hang-ups after the final dot (%d transactions), %d copies taken by a process cut short, %d saves reported failed, %d copies whose sender deferred with the outcome unknown; "+
		"%d duplicates (%d after a hang-up, %d after a cut-short process, %d after a failed save; %d unexplained), "+
		"%d losses, %d copies after a saved delivery, %d unreported acceptances",
		c.messages, len(expected), len(d.incs), c.kills, c.shutdowns, c.flushes,
		dropWindows, drops, cutWindows, notSavedWindows, unknownWindows,
		dups, dupAfterDrop, dupAfterCut, dupAfterNotSaved, unexplained, losses, afterSaved, lies)
	if losses > 0 {
		t.Errorf("%d recipients lost", losses)
	}
}
