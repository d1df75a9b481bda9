package mailroute

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/mailroute/go-mailroute/internal/spool"
)

// Spool is the embedded queue store: one directory on the local disk,
// nothing to install. Every change is durable when its method returns (the
// file is written to a temporary name, fsynced, renamed, and the directory
// fsynced), so a crash or a kill loses nothing that was acknowledged;
// entries found unreadable or truncated at start are moved to Dir/corrupt
// with a log line. Concurrent writes share their directory fsyncs (group
// commit).
//
// A Spool serves one process at a time: its leases live in memory. Use it
// as Config.Queue; the zero value with Dir set is ready, and the directory
// is opened on first use. Close it after the Mailer.
type Spool struct {
	// Dir is the directory; it is created (0700) when missing.
	Dir string
	// NoSync skips fsync. Fast, and loses queued mail on a power cut or a
	// kernel crash: for tests only.
	NoSync bool
	// Logger receives the quarantine of corrupt entries. nil: none.
	Logger *slog.Logger

	once  sync.Once
	store *spool.Store
	err   error
	// leased keeps the store's own copy of each leased message: it carries
	// the lease token that makes a late Update from an expired lease fail
	// instead of overwriting the next holder's state.
	leased sync.Map // id → *spool.Message
}

var _ QueueStore = (*Spool)(nil)

func (s *Spool) open() (*spool.Store, error) {
	s.once.Do(func() {
		s.store, s.err = spool.Open(s.Dir, spool.Options{NoSync: s.NoSync, Logger: s.Logger})
	})
	return s.store, s.err
}

// Enqueue implements QueueStore.
func (s *Spool) Enqueue(ctx context.Context, m *QueuedMessage, body io.Reader) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	sm := toSpool(m)
	if err := st.Enqueue(ctx, sm, body); err != nil {
		return err
	}
	m.ID = sm.ID
	return nil
}

// Lease implements QueueStore.
func (s *Spool) Lease(ctx context.Context, now time.Time, max int, lease time.Duration) ([]*QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.Lease(ctx, now, max, lease)
	for _, sm := range msgs {
		s.leased.Store(sm.ID, sm)
	}
	return fromSpoolAll(msgs), err
}

// Body implements QueueStore.
func (s *Spool) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	return st.Body(ctx, id)
}

// Update implements QueueStore.
func (s *Spool) Update(ctx context.Context, m *QueuedMessage) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	sm := toSpool(m)
	if v, ok := s.leased.LoadAndDelete(m.ID); ok {
		held := v.(*spool.Message)
		held.Recipients = sm.Recipients
		sm = held
	}
	return st.Update(ctx, sm)
}

// Release implements QueueStore.
func (s *Spool) Release(ctx context.Context, id string) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	s.leased.Delete(id)
	st.Release(id)
	return nil
}

// List implements QueueStore.
func (s *Spool) List(ctx context.Context) ([]*QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.List(ctx)
	return fromSpoolAll(msgs), err
}

// Close closes the directory store.
func (s *Spool) Close() error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.Close()
}

func toSpool(m *QueuedMessage) *spool.Message {
	sm := &spool.Message{ID: m.ID, From: m.From, Created: m.Created, Recipients: make([]spool.Recipient, len(m.Recipients))}
	for i, r := range m.Recipients {
		sm.Recipients[i] = spool.Recipient{
			Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
			NextAttempt: r.NextAttempt, LastError: r.LastError, Queued: r.Queued,
		}
	}
	return sm
}

func fromSpoolAll(msgs []*spool.Message) []*QueuedMessage {
	out := make([]*QueuedMessage, len(msgs))
	for i, sm := range msgs {
		m := &QueuedMessage{ID: sm.ID, From: sm.From, Created: sm.Created, Recipients: make([]QueuedRecipient, len(sm.Recipients))}
		for k, r := range sm.Recipients {
			m.Recipients[k] = QueuedRecipient{
				Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
				NextAttempt: r.NextAttempt, LastError: r.LastError, Queued: r.Queued,
			}
		}
		out[i] = m
	}
	return out
}
