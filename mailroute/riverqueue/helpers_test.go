package riverqueue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailroute/go-mailroute/internal/peertest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// newDB returns a pool on a schema of its own in the peers' PostgreSQL
// (dropped at the end of the test), not yet migrated. Without
// MAILROUTE_PEERS=1 the test is skipped.
func newDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	env := peertest.Require(t)
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := "mrq_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, env.PostgresURL)
	if err != nil {
		t.Fatalf("connecting to %s: %v", env.PostgresURL, err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(env.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping %s: %v", schema, err)
		}
		admin.Close(ctx)
	})
	return pool
}

// newStore returns a migrated Store on a fresh schema.
func newStore(t testing.TB) (*riverqueue.Store, *pgxpool.Pool) {
	t.Helper()
	pool := newDB(t)
	s := &riverqueue.Store{Pool: pool}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s, pool
}
