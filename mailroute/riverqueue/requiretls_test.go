package riverqueue_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute"
	"github.com/mailroute/go-mailroute/mailroute/queuetest"
)

// marks returns each listed message's RequireTLS by its first recipient.
func marks(t *testing.T, s mailroute.QueueStore) map[string]bool {
	t.Helper()
	list, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool, len(list))
	for _, m := range list {
		out[m.Recipients[0].Rcpt] = m.RequireTLS
	}
	return out
}

// EnqueueBatch stores each message's mark, and a database migrated before
// the mark existed keeps its messages, unmarked, through Migrate.
func TestREQUIRETLSBatchAndMigration(t *testing.T) {
	s, pool := newStore(t)
	ctx := context.Background()
	batch := batchOf(3, "b", queuetest.T0)
	batch[1].Message.RequireTLS = true
	if err := s.EnqueueBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := marks(t, s); len(got) != 3 || got["b0@dest.test"] || !got["b1@dest.test"] || got["b2@dest.test"] {
		t.Fatalf("marks after EnqueueBatch: %v", got)
	}

	// Back to the schema of version 4, with the unmarked messages in it,
	// as a database queued by the version before the mark; then upgrade.
	if _, err := pool.Exec(ctx, `DELETE FROM river_job WHERE id = (SELECT job_id FROM mailroute_message WHERE require_tls);
		ALTER TABLE mailroute_message DROP COLUMN require_tls;
		DELETE FROM mailroute_migration WHERE version = 5`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got := marks(t, s); len(got) != 2 || got["b0@dest.test"] || got["b2@dest.test"] {
		t.Fatalf("marks after the upgrade: %v, want b0 and b2 unmarked", got)
	}
	msgs, err := s.Lease(ctx, mailroute.LeaseRequest{Now: queuetest.T0, Max: 10, Duration: time.Minute})
	if err != nil || len(msgs) != 2 || msgs[0].RequireTLS || msgs[1].RequireTLS {
		t.Fatalf("leased %d (%v) after the upgrade", len(msgs), err)
	}
}
