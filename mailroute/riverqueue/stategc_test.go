package riverqueue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/statetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// syncBuffer is a log destination safe for a background sweep.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func countRows(t testing.TB, pool *pgxpool.Pool, where string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM mailroute_state `+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The River store deletes its expired rows; a DELETE that fails (here a
// trigger refuses it, as a lost connection or a permission would) is
// logged and changes nothing else.
func TestStateExpiry(t *testing.T) {
	_, pool := newStore(t)
	ctx := context.Background()
	var log syncBuffer
	s := &riverqueue.Store{Pool: pool, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	riverqueue.HoldSweeps(s)
	if _, err := pool.Exec(ctx, `CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'deletes refused by the test'; END $$`); err != nil {
		t.Fatal(err)
	}
	statetest.RunExpiry(t, statetest.Storage{
		Store: s,
		Sweep: func(ctx context.Context, now time.Time) error {
			_, err := riverqueue.SweepState(ctx, s, now)
			return err
		},
		Stored: func() int { return countRows(t, pool, "") },
		FailSweep: func(fail bool) {
			sql := `DROP TRIGGER refuse ON mailroute_state`
			if fail {
				sql = `CREATE TRIGGER refuse BEFORE DELETE ON mailroute_state FOR EACH ROW EXECUTE FUNCTION refuse_delete()`
			}
			if _, err := pool.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		},
		Logged: log.String,
	})
}

// A sweep deletes only its own queue's rows, in batches until one comes
// back short, and counts them exactly.
func TestStateSweepBatchesOwnQueue(t *testing.T) {
	s, pool := newStore(t)
	riverqueue.HoldSweeps(s)
	ctx := context.Background()
	now := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO mailroute_state (queue, namespace, key, value, expires)
		SELECT q, 'ns', 'k' || i, '', $1::timestamptz - (i || ' seconds')::interval
		FROM generate_series(1, 2500) i, unnest(ARRAY[$2, 'other']) q`, now, riverqueue.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	if err := s.PutState(ctx, "ns", "live", []byte("v"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	n, err := riverqueue.SweepState(ctx, s, now)
	if err != nil || n != 2500 {
		t.Fatalf("swept %d, %v; want 2500", n, err)
	}
	if got := countRows(t, pool, `WHERE queue = 'other'`); got != 2500 {
		t.Errorf("another queue's rows: %d left, want 2500", got)
	}
	if got := countRows(t, pool, `WHERE queue = '`+riverqueue.DefaultQueue+`'`); got != 1 {
		t.Errorf("%d rows left in the store's queue, want the live one", got)
	}
}

// The sweep reads the expired rows through the index on expiry, not the
// table: with 3,000 live rows and 20 expired, a batch reads about the 20.
func TestStateSweepReadsOnlyExpired(t *testing.T) {
	_, pool := newStore(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO mailroute_state (queue, namespace, key, value, expires)
		SELECT $2, 'ns', 'k' || i, '', CASE WHEN i <= 20 THEN $1::timestamptz - interval '1 hour' ELSE $1::timestamptz + interval '1 day' END
		FROM generate_series(1, 3000) i`, now, riverqueue.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE mailroute_state`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var out []byte
	if err := tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+riverqueue.StateSweepSQL,
		riverqueue.DefaultQueue, now, 1000).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plan []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plan); err != nil || len(plan) != 1 {
		t.Fatalf("EXPLAIN: %v %s", err, out)
	}
	if !bytes.Contains(out, []byte(`"mailroute_state_expires"`)) {
		t.Errorf("the sweep does not use mailroute_state_expires: %s", out)
	}
	// The expired rows, found by the index and then by their key.
	if r := plan[0].Plan.read(); r > 3*20 {
		t.Errorf("the sweep read %v rows to delete 20 of 3,020: %s", r, out)
	}
}

// A PutState or ListState starts a sweep in the background, without
// waiting for it: expired rows go without any call to the sweep.
func TestStateSweptInBackground(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO mailroute_state (queue, namespace, key, value, expires)
		SELECT $1, 'ns', 'k' || i, '', now() - interval '1 minute' FROM generate_series(1, 5) i`, riverqueue.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListState(ctx, "ns", time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, pool, "") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d expired rows left 10 s after a ListState", countRows(t, pool, ""))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Migrating a database whose index build was interrupted (an invalid
// index of that name) drops the leftover and builds it again.
func TestMigrateRebuildsInvalidStateIndex(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	for i := range 3 {
		if err := s.PutState(ctx, "ns", fmt.Sprint("k", i), []byte("v"), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `DROP INDEX mailroute_state_expires`); err != nil {
		t.Fatal(err)
	}
	// Back to version 3: the build of version 4 never finished, so no
	// later version ran either (version 5 is idempotent).
	if _, err := pool.Exec(ctx, `DELETE FROM mailroute_migration WHERE version >= 4`); err != nil {
		t.Fatal(err)
	}
	// A concurrent build that fails leaves its index behind, invalid.
	if _, err := pool.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY mailroute_state_expires ON mailroute_state (queue)`); err == nil {
		t.Fatal("a unique index over duplicates was built")
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var valid, unique bool
	if err := pool.QueryRow(ctx, `SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = to_regclass('mailroute_state_expires')`).Scan(&valid, &unique); err != nil {
		t.Fatal(err)
	}
	if !valid || unique {
		t.Errorf("after Migrate the index is valid=%v unique=%v", valid, unique)
	}
}

// A sweep that meets a row being renewed — a PutState's upsert not yet
// committed — leaves it: the renewed value is there once both are done.
func TestStateSweepSparesRowBeingRenewed(t *testing.T) {
	s, pool := newStore(t)
	riverqueue.HoldSweeps(s)
	ctx := context.Background()
	now := time.Now()
	if err := s.PutState(ctx, "ns", "k", []byte("old"), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO mailroute_state (queue, namespace, key, value, expires)
		VALUES ($1, 'ns', 'k', 'fresh', $2)
		ON CONFLICT (queue, namespace, key) DO UPDATE SET value = excluded.value, expires = excluded.expires`,
		riverqueue.DefaultQueue, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := riverqueue.SweepState(ctx, s, now)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(200 * time.Millisecond):
		// Waiting for the row: let the renewal commit, then the sweep
		// must see the new expiry.
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	tx.Commit(ctx)
	if v, ok, err := s.GetState(ctx, "ns", "k", now); err != nil || !ok || string(v) != "fresh" {
		t.Fatalf("after the sweep: %q, %v, %v; want the renewed value", v, ok, err)
	}
}
