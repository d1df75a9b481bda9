package mailroute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"

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

// Lease implements QueueStore. Tokens are the spool's lease numbers, which
// never repeat while the Spool is open.
func (s *Spool) Lease(ctx context.Context, req LeaseRequest) ([]*QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.LeaseDue(ctx, req.Now, req.due(), req.Max, req.Duration)
	out := fromSpoolAll(msgs)
	for i, sm := range msgs {
		out[i].Lease = strconv.FormatUint(sm.Lease, 10)
		out[i].LeaseUntil = req.Now.Add(req.Duration)
	}
	return out, err
}

// Body implements QueueStore.
func (s *Spool) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	f, err := st.Body(ctx, id)
	if errors.Is(err, spool.ErrCorrupt) {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
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
		return 0, fmt.Errorf("%w: %s: token %q is not a lease of this spool", ErrLeaseLost, id, token)
	}
	return n, nil
}

func spoolLeaseErr(err error) error {
	if errors.Is(err, spool.ErrLeaseLost) {
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}

// Update implements QueueStore.
func (s *Spool) Update(ctx context.Context, m *QueuedMessage) error {
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

// Release implements QueueStore.
func (s *Spool) Release(ctx context.Context, id, token string) error {
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

// Quarantine implements QueueStore: the message's files go to Dir/corrupt.
func (s *Spool) Quarantine(ctx context.Context, id, token string, reason error) error {
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

// List implements QueueStore.
func (s *Spool) List(ctx context.Context) ([]*QueuedMessage, error) {
	st, err := s.open()
	if err != nil {
		return nil, err
	}
	msgs, err := st.List(ctx)
	return fromSpoolAll(msgs), err
}

// quarantinedAtOpen returns, once, the entries the spool found damaged when
// it opened the directory and moved to Dir/corrupt, for the Mailer to
// report as EventQuarantined.
func (s *Spool) quarantinedAtOpen() []quarantineNote {
	st, err := s.open()
	if err != nil {
		return nil
	}
	var out []quarantineNote
	for _, q := range st.TakeQuarantined() {
		out = append(out, quarantineNote{id: q.ID, reason: fmt.Errorf("%w: %w", ErrCorrupt, q.Reason)})
	}
	return out
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
