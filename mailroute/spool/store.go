package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	dirspool "github.com/mailroute/go-mailroute/internal/spool"
	"github.com/mailroute/go-mailroute/mailroute"
)

// Store is the embedded queue store: one directory on the local disk,
// nothing to install. Every change is durable when its method returns: it
// is a record in a write-ahead journal (Dir/journal), fdatasynced before
// the method returns, and concurrent writes share one fdatasync (group
// commit). A message's body (up to 256 KiB; a larger one is written to its
// file at once) and state stay in the journal until the checkpoint that
// drops its generation writes their files in Dir/queue and makes them
// durable (a message delivered before then never gets a file); a store
// opened after a crash replays the journal first. So a crash or a kill loses nothing that was
// acknowledged; entries found unreadable or truncated at start are moved
// to Dir/corrupt with a log line.
//
// A Store serves one process at a time (it holds a lock on Dir): its
// leases live in memory. Use it as mailroute.Config.Queue; the zero value
// with Dir set is ready, and the directory is opened on first use. Close it
// after the Mailer.
type Store struct {
	// Dir is the directory; it is created (0700) when missing.
	Dir string
	// NoSync skips fsync (and fdatasync, syncfs). Fast, and loses queued
	// mail on a power cut or a kernel crash: for tests only.
	NoSync bool
	// Logger receives the quarantine of corrupt entries. nil: none.
	Logger *slog.Logger

	once  sync.Once
	store *dirspool.Store
	err   error
}

var (
	_ mailroute.QueueStore         = (*Store)(nil)
	_ mailroute.QuarantineReporter = (*Store)(nil)
)

func (s *Store) open() (*dirspool.Store, error) {
	s.once.Do(func() {
		s.store, s.err = dirspool.Open(s.Dir, dirspool.Options{NoSync: s.NoSync, Logger: s.Logger})
	})
	return s.store, s.err
}

// Enqueue implements mailroute.QueueStore.
func (s *Store) Enqueue(ctx context.Context, m *mailroute.QueuedMessage, body io.Reader) error {
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

// Lease implements mailroute.QueueStore. Tokens are the spool's lease numbers, which
// never repeat while the Store is open.
func (s *Store) Lease(ctx context.Context, req mailroute.LeaseRequest) ([]*mailroute.QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.LeaseDue(ctx, req.Now, dueBy(req), req.Max, req.Duration)
	out := fromSpoolAll(msgs)
	for i, sm := range msgs {
		out[i].Lease = strconv.FormatUint(sm.Lease, 10)
		out[i].LeaseUntil = req.Now.Add(req.Duration)
	}
	return out, err
}

// Body implements mailroute.QueueStore.
func (s *Store) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	f, err := st.Body(ctx, id)
	if errors.Is(err, dirspool.ErrCorrupt) {
		return nil, fmt.Errorf("%w: %w", mailroute.ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

// spoolToken parses a token Lease handed out; anything else is no lease
// at all, which the spool must not read as "unfenced" (0).
func spoolToken(id, token string) (uint64, error) {
	n, err := strconv.ParseUint(token, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: %s: token %q is not a lease of this spool", mailroute.ErrLeaseLost, id, token)
	}
	return n, nil
}

func spoolLeaseErr(err error) error {
	if errors.Is(err, dirspool.ErrLeaseLost) {
		return fmt.Errorf("%w: %w", mailroute.ErrLeaseLost, err)
	}
	return err
}

// Update implements mailroute.QueueStore.
func (s *Store) Update(ctx context.Context, m *mailroute.QueuedMessage) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	sm := toSpool(m)
	if sm.Lease, err = spoolToken(m.ID, m.Lease); err != nil {
		return err
	}
	return spoolLeaseErr(st.Update(ctx, sm))
}

// Release implements mailroute.QueueStore.
func (s *Store) Release(ctx context.Context, id, token string) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	n, err := spoolToken(id, token)
	if err != nil {
		return nil // holds no lease: nothing to end
	}
	st.ReleaseLease(id, n)
	return nil
}

// Quarantine implements mailroute.QueueStore: the message's files go to Dir/corrupt.
func (s *Store) Quarantine(ctx context.Context, id, token string, reason error) error {
	st, err := s.open()
	if err != nil {
		return err
	}
	n, err := spoolToken(id, token)
	if err != nil {
		return err
	}
	return spoolLeaseErr(st.Quarantine(id, n, reason))
}

// List implements mailroute.QueueStore.
func (s *Store) List(ctx context.Context) ([]*mailroute.QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.List(ctx)
	return fromSpoolAll(msgs), err
}

// TakeQuarantined implements mailroute.QuarantineReporter: the entries the
// store found damaged when it opened the directory and moved to
// Dir/corrupt, each once, for the Mailer to report as EventQuarantined.
func (s *Store) TakeQuarantined() map[string]error {
	st, err := s.open()
	if err != nil {
		return nil
	}
	out := make(map[string]error)
	for _, q := range st.TakeQuarantined() {
		out[q.ID] = fmt.Errorf("%w: %w", mailroute.ErrCorrupt, q.Reason)
	}
	return out
}

// dueBy is the NextAttempt cutoff of a lease request: DueBy, or Now when
// it is zero (as mailroute.LeaseRequest documents).
func dueBy(req mailroute.LeaseRequest) time.Time {
	if req.DueBy.IsZero() {
		return req.Now
	}
	return req.DueBy
}

// Close closes the directory store.
func (s *Store) Close() error {
	st, err := s.open()
	if err != nil {
		return err
	}
	return st.Close()
}

func toSpool(m *mailroute.QueuedMessage) *dirspool.Message {
	sm := &dirspool.Message{ID: m.ID, From: m.From, Created: m.Created, RequireTLS: m.RequireTLS,
		Recipients: make([]dirspool.Recipient, len(m.Recipients))}
	for i, r := range m.Recipients {
		sm.Recipients[i] = dirspool.Recipient{
			Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
			NextAttempt: r.NextAttempt, LastError: r.LastError, Queued: r.Queued,
		}
	}
	return sm
}

func fromSpoolAll(msgs []*dirspool.Message) []*mailroute.QueuedMessage {
	out := make([]*mailroute.QueuedMessage, len(msgs))
	for i, sm := range msgs {
		m := &mailroute.QueuedMessage{ID: sm.ID, From: sm.From, Created: sm.Created, RequireTLS: sm.RequireTLS,
			Recipients: make([]mailroute.QueuedRecipient, len(sm.Recipients))}
		for k, r := range sm.Recipients {
			m.Recipients[k] = mailroute.QueuedRecipient{
				Rcpt: r.Rcpt, Attempts: r.Attempts, DirectAttempts: r.DirectAttempts,
				NextAttempt: r.NextAttempt, LastError: r.LastError, Queued: r.Queued,
			}
		}
		out[i] = m
	}
	return out
}
