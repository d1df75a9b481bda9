package riverqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// groupFixture is a Store whose round trips are counted, with n messages
// (recipient g<i>@dest.test) leased twice: stale holds the first leases,
// which ran out, cur the second, current ones.
type groupFixture struct {
	s          *riverqueue.Store
	admin      *pgxpool.Pool // the same database, not counted
	rt         *roundTrips
	cur, stale []*mailroute.QueuedMessage
}

func newGroupFixture(t *testing.T, n int) *groupFixture {
	t.Helper()
	s, admin, rt := tracedStore(t)
	ctx := context.Background()
	t0 := queuetest.T0
	if err := s.EnqueueBatch(ctx, batchOf(n, "g", t0)); err != nil {
		t.Fatal(err)
	}
	f := &groupFixture{s: s, admin: admin, rt: rt}
	byRcpt := func(l []*mailroute.QueuedMessage) []*mailroute.QueuedMessage {
		out := make([]*mailroute.QueuedMessage, n)
		for _, m := range l {
			var i int
			if _, err := fmt.Sscanf(m.Recipients[0].Rcpt, "g%d@dest.test", &i); err != nil || out[i] != nil {
				t.Fatalf("leased %s", m.Recipients[0].Rcpt)
			}
			out[i] = m
		}
		return out
	}
	for _, now := range []time.Time{t0, t0.Add(2 * time.Minute)} {
		l, err := s.Lease(ctx, mailroute.LeaseRequest{Now: now, Max: n, Duration: time.Minute})
		if err != nil || len(l) != n {
			t.Fatalf("leased %d of %d: %v", len(l), n, err)
		}
		f.stale, f.cur = f.cur, byRcpt(l)
	}
	return f
}

// blocker holds the lock of a message's job in a transaction of its own,
// as a slow writer would: a group that contains the message waits for it.
type blocker struct {
	tx  pgx.Tx
	pid int
}

func (f *groupFixture) block(t *testing.T, id string) *blocker {
	t.Helper()
	ctx := context.Background()
	tx, err := f.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	b := &blocker{tx: tx}
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&b.pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM river_job
		WHERE id = (SELECT job_id FROM mailroute_message WHERE id = $1) FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *blocker) release(t *testing.T) {
	t.Helper()
	if err := b.tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waiter returns the backend that waits for b's lock, once one does.
func (f *groupFixture) waiter(t *testing.T, b *blocker) int {
	t.Helper()
	for start := time.Now(); ; time.Sleep(2 * time.Millisecond) {
		var pid int
		err := f.admin.QueryRow(context.Background(),
			`SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, b.pid).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if time.Since(start) > time.Minute {
			t.Fatal("no commit waits for the blocker")
		}
	}
}

// waitPending waits until n outcomes wait for the Store's next commit.
func (f *groupFixture) waitPending(t *testing.T, n int) {
	t.Helper()
	for start := time.Now(); riverqueue.PendingOutcomes(f.s) != n; time.Sleep(time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("%d outcomes pending, want %d", riverqueue.PendingOutcomes(f.s), n)
		}
	}
}

// refuse makes PostgreSQL refuse every change to the messages ids (a
// trigger raises an error), as a constraint or a bad value would.
func (f *groupFixture) refuse(t *testing.T, ids ...string) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE poison (id text PRIMARY KEY)`,
		`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF EXISTS (SELECT 1 FROM poison WHERE id = OLD.id) THEN
				RAISE EXCEPTION 'injected: % refused', OLD.id;
			END IF;
			IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse BEFORE UPDATE OR DELETE ON mailroute_message
			FOR EACH ROW EXECUTE FUNCTION refuse()`,
	} {
		if _, err := f.admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.admin.Exec(ctx, `INSERT INTO poison SELECT unnest($1::text[])`, ids); err != nil {
		t.Fatal(err)
	}
}

// What the group's members do: 0 opens the group (its commit waits for a
// blocker while the others gather), 1 and 4 were delivered (Update without
// recipients: deleted), 2 and 5 deferred for an hour (Update), 3 is
// released.
const (
	opDeliver = "deliver"
	opDefer   = "defer"
	opRelease = "release"
)

var groupOps = []string{opDeliver, opDeliver, opDefer, opRelease, opDeliver, opDefer}

// Outcomes of concurrent attempts are committed together, and a fault
// touches only the outcomes it concerns: a stale lease, a message that is
// gone, a row PostgreSQL refuses or a caller that gives up fails only its
// own outcome; a group that fails as a whole (every row refused, the
// connection killed mid-commit) fails every member, and changes nothing.
// In every case each message is where its outcome says: changed when its
// caller got nil, untouched (and leased again once its lease ends) when
// not.
func TestOutcomeGroupFaults(t *testing.T) {
	const (
		ok      = ""
		lost    = "lease lost"
		gone    = "not found"
		refused = "refused"   // an error naming the injected refusal
		unknown = "failed"    // an error from the lost connection
		gaveUp  = "cancelled" // context.Canceled
	)
	for _, c := range []struct {
		name string
		// prep runs before the members are submitted; during, once they
		// all wait behind member 0's commit, instead of letting it go.
		prep   func(t *testing.T, f *groupFixture)
		during func(t *testing.T, f *groupFixture, open *blocker, cancel []context.CancelFunc)
		want   []string // each member's result
		trips  int64    // round trips from member 0's Update on
	}{{
		name:  "no fault",
		want:  []string{ok, ok, ok, ok, ok, ok},
		trips: 2,
	}, {
		name: "a stale lease",
		prep: func(t *testing.T, f *groupFixture) { f.cur[1] = f.stale[1] },
		want: []string{ok, lost, ok, ok, ok, ok}, trips: 2,
	}, {
		name: "a message that is gone",
		prep: func(t *testing.T, f *groupFixture) {
			if _, err := f.admin.Exec(context.Background(), `DELETE FROM river_job
				WHERE id = (SELECT job_id FROM mailroute_message WHERE id = $1)`, f.cur[4].ID); err != nil {
				t.Fatal(err)
			}
		},
		want: []string{ok, ok, ok, ok, gone, ok}, trips: 2,
	}, {
		name: "a row PostgreSQL refuses",
		prep: func(t *testing.T, f *groupFixture) { f.refuse(t, f.cur[5].ID) },
		want: []string{ok, ok, ok, ok, ok, refused},
		// The group, refused as a whole, then each member on its own.
		trips: 2 + 5,
	}, {
		name: "every row refused",
		prep: func(t *testing.T, f *groupFixture) {
			f.refuse(t, f.cur[1].ID, f.cur[2].ID, f.cur[3].ID, f.cur[4].ID, f.cur[5].ID)
		},
		want: []string{ok, refused, refused, refused, refused, refused}, trips: 2 + 5,
	}, {
		name: "the connection killed before the commit",
		during: func(t *testing.T, f *groupFixture, open *blocker, _ []context.CancelFunc) {
			// The group locks its jobs in order and waits at member
			// 5's, which another transaction holds: then its
			// connection is killed.
			b := f.block(t, f.cur[5].ID)
			open.release(t)
			pid := f.waiter(t, b)
			if _, err := f.admin.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			b.release(t)
		},
		// Not retried: after a lost connection nobody knows whether
		// the commit happened.
		want: []string{ok, unknown, unknown, unknown, unknown, unknown}, trips: 2,
	}, {
		name: "a caller that gives up while waiting",
		during: func(t *testing.T, f *groupFixture, open *blocker, cancel []context.CancelFunc) {
			cancel[2]()
			open.release(t)
		},
		want: []string{ok, ok, gaveUp, ok, ok, ok}, trips: 2,
	}} {
		t.Run(c.name, func(t *testing.T) {
			f := newGroupFixture(t, len(groupOps))
			ctx := context.Background()
			t0 := queuetest.T0
			if c.prep != nil {
				c.prep(t, f)
			}
			ms := make([]*mailroute.QueuedMessage, len(f.cur))
			for i, m := range f.cur {
				cp := *m
				cp.Recipients = append([]mailroute.QueuedRecipient(nil), m.Recipients...)
				switch groupOps[i] {
				case opDeliver:
					cp.Recipients = nil
				case opDefer:
					cp.Recipients[0].Attempts = 1
					cp.Recipients[0].NextAttempt = t0.Add(time.Hour)
					cp.Recipients[0].LastError = "451 try later"
				}
				ms[i] = &cp
			}
			errs := make([]error, len(ms))
			cancel := make([]context.CancelFunc, len(ms))
			submit := func(wg *sync.WaitGroup, i int) {
				cctx, cancelI := context.WithCancel(ctx)
				cancel[i] = cancelI
				wg.Go(func() {
					if groupOps[i] == opRelease {
						errs[i] = f.s.Release(cctx, ms[i].ID, ms[i].Lease)
					} else {
						errs[i] = f.s.Update(cctx, ms[i])
					}
				})
			}
			open := f.block(t, f.cur[0].ID)
			before := f.rt.n.Load()
			var first, rest sync.WaitGroup
			submit(&first, 0)
			f.waiter(t, open) // member 0's commit is in flight
			for i := 1; i < len(ms); i++ {
				submit(&rest, i)
			}
			f.waitPending(t, len(ms)-1)
			if c.during != nil {
				c.during(t, f, open, cancel)
			} else {
				open.release(t)
			}
			first.Wait()
			rest.Wait()
			for _, cc := range cancel {
				cc()
			}
			if got := f.rt.n.Load() - before; got != c.trips {
				t.Errorf("%d round trips for %d outcomes, want %d", got, len(ms), c.trips)
			}

			applied := make([]bool, len(ms))
			for i, err := range errs {
				var good bool
				switch c.want[i] {
				case ok:
					good = err == nil
					applied[i] = true
				case lost:
					good = errors.Is(err, riverqueue.ErrLeaseLost)
				case gone:
					good = errors.Is(err, riverqueue.ErrNotFound)
				case refused:
					good = err != nil && strings.Contains(err.Error(), "injected: "+ms[i].ID+" refused")
				case unknown:
					good = err != nil && !errors.Is(err, riverqueue.ErrLeaseLost) && !errors.Is(err, riverqueue.ErrNotFound)
				case gaveUp:
					good = errors.Is(err, context.Canceled)
				}
				if !good {
					t.Errorf("member %d (%s): %v, want %s", i, groupOps[i], err, cmpOr(c.want[i], "nil"))
				}
			}

			// Each message is where its outcome says; the untouched
			// ones are still held by their current lease.
			rows, err := f.admin.Query(ctx, `SELECT m.id, m.leased_by IS NOT NULL, m.lease, m.recipients->0->>'attempts', j.state, j.scheduled_at
				FROM mailroute_message m JOIN river_job j ON j.id = m.job_id`)
			if err != nil {
				t.Fatal(err)
			}
			type state struct {
				leased   bool
				gen      int64
				attempts *string
				job      string
				at       time.Time
			}
			have := map[string]state{}
			for rows.Next() {
				var id string
				var s state
				if err := rows.Scan(&id, &s.leased, &s.gen, &s.attempts, &s.job, &s.at); err != nil {
					t.Fatal(err)
				}
				have[id] = s
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			for i, m := range f.cur {
				s, there := have[m.ID]
				gen := fmt.Sprint(s.gen)
				switch {
				case c.want[i] == gone:
					if there {
						t.Errorf("member %d: the deleted message is back", i)
					}
				case !applied[i]:
					if !there || !s.leased || s.attempts != nil || (c.want[i] != lost && gen != m.Lease) {
						t.Errorf("member %d (%s, %s): changed although its outcome was not recorded: %+v", i, groupOps[i], c.want[i], s)
					}
				case groupOps[i] == opDeliver:
					if there {
						t.Errorf("member %d: delivered but still queued", i)
					}
				case groupOps[i] == opDefer:
					if !there || s.leased || s.attempts == nil || *s.attempts != "1" || !s.at.Equal(t0.Add(time.Hour)) {
						t.Errorf("member %d: deferral not recorded: %+v", i, s)
					}
				case groupOps[i] == opRelease:
					if !there || s.leased || s.attempts != nil || s.job != "available" {
						t.Errorf("member %d: not released: %+v", i, s)
					}
				}
			}

			// Nothing is lost: once the fault is gone and the leases
			// end, every message not delivered nor deleted is leased
			// again.
			if _, err := f.admin.Exec(ctx, `DROP TRIGGER IF EXISTS refuse ON mailroute_message`); err != nil {
				t.Fatal(err)
			}
			want := 0
			for i := range f.cur {
				if !(applied[i] && groupOps[i] == opDeliver) && c.want[i] != gone {
					want++
				}
			}
			l, err := f.s.Lease(ctx, mailroute.LeaseRequest{Now: t0.Add(2 * time.Hour), Max: 100, Duration: time.Minute})
			if err != nil || len(l) != want {
				t.Errorf("leased %d after the leases ended, want %d: %v", len(l), want, err)
			}
		})
	}
}

func cmpOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// A hundred outcomes that arrive while one commit is in flight share the
// next: two round trips and two commits for 101 attempts.
func TestOutcomesShareACommit(t *testing.T) {
	const n = 101
	f := newGroupFixture(t, n)
	ctx := context.Background()
	open := f.block(t, f.cur[0].ID)
	before := f.rt.n.Load()
	var wg sync.WaitGroup
	errs := make([]error, n)
	update := func(i int) {
		wg.Go(func() {
			m := *f.cur[i]
			m.Recipients = nil
			errs[i] = f.s.Update(ctx, &m)
		})
	}
	update(0)
	f.waiter(t, open)
	for i := 1; i < n; i++ {
		update(i)
	}
	f.waitPending(t, n-1)
	open.release(t)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Update %d: %v", i, err)
		}
	}
	if got := f.rt.n.Load() - before; got != 2 {
		t.Errorf("%d round trips for %d outcomes, want 2", got, n)
	}
	if left := count(t, f.admin, `SELECT count(*) FROM mailroute_message`); left != 0 {
		t.Errorf("%d messages left, want none", left)
	}
}

// Two outcomes for one message that wait for the same commit (the
// holder's, and a stale holder's whose lease ran out) are committed one
// after the other, never in one statement: the current one is recorded,
// the stale one loses.
func TestOutcomesForOneMessageApplyInTurn(t *testing.T) {
	f := newGroupFixture(t, 2)
	ctx := context.Background()
	open := f.block(t, f.cur[0].ID)
	before := f.rt.n.Load()
	var wg sync.WaitGroup
	var errs [3]error
	wg.Go(func() { errs[0] = f.s.Release(ctx, f.cur[0].ID, f.cur[0].Lease) })
	f.waiter(t, open)
	deferred := *f.cur[1]
	deferred.Recipients = append([]mailroute.QueuedRecipient(nil), f.cur[1].Recipients...)
	deferred.Recipients[0].Attempts = 1
	deferred.Recipients[0].NextAttempt = queuetest.T0.Add(time.Hour)
	stale := *f.stale[1]
	stale.Recipients = nil
	wg.Go(func() { errs[1] = f.s.Update(ctx, &deferred) })
	wg.Go(func() { errs[2] = f.s.Update(ctx, &stale) })
	f.waitPending(t, 2)
	open.release(t)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], riverqueue.ErrLeaseLost) {
		t.Errorf("release %v, current holder's update %v, stale holder's %v (want nil, nil, ErrLeaseLost)", errs[0], errs[1], errs[2])
	}
	if got := f.rt.n.Load() - before; got != 3 {
		t.Errorf("%d round trips, want 3: the opener's, then one for each outcome of message 1", got)
	}
	if n := count(t, f.admin, `SELECT count(*) FROM mailroute_message
		WHERE recipients->0->>'attempts' = '1' AND leased_by IS NULL`); n != 1 {
		t.Errorf("%d messages with the deferral recorded, want 1", n)
	}
}
