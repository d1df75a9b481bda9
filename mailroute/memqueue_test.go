package mailroute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// MemoryQueue is the core tests' durable store: a QueueStore and
// StateStore in memory, shared by every Mailer given the same value, as a
// directory or a database is shared across restarts. It lives here, not in
// a package, because the real stores (mailroute/spool, riverqueue) import
// this package and an internal test cannot import them back. It is
// exported only so that queue_conformance_test.go can hold it to the same
// contract as the real stores (queuetest.Run): a double that passes it is
// no weaker a store than they are for the Mailer's queue logic.
type MemoryQueue struct {
	memoryState // the StateStore half

	mu      sync.Mutex
	seq     uint64
	msgs    map[string]*memEntry
	aside   map[string]error // quarantined, kept for a test to inspect
	pending map[string]error // set aside, until TakeQuarantined
}

type memEntry struct {
	m     QueuedMessage // Lease and LeaseUntil unused: see token and until
	body  []byte
	token string
	until time.Time
}

var (
	_ QueueStore         = (*MemoryQueue)(nil)
	_ StateStore         = (*MemoryQueue)(nil)
	_ QuarantineReporter = (*MemoryQueue)(nil)
)

func newMemQueue() *MemoryQueue { return &MemoryQueue{} }

func cloneQueued(m *QueuedMessage) *QueuedMessage {
	c := *m
	c.Recipients = slices.Clone(m.Recipients)
	return &c
}

func (q *MemoryQueue) Enqueue(ctx context.Context, m *QueuedMessage, body io.Reader) error {
	if len(m.Recipients) == 0 {
		return errors.New("memqueue: a message without recipients")
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.msgs == nil {
		q.msgs = make(map[string]*memEntry)
	}
	q.seq++
	if m.ID == "" {
		m.ID = fmt.Sprintf("m%06d", q.seq)
	}
	c := cloneQueued(m)
	c.Lease, c.LeaseUntil = "", time.Time{}
	q.msgs[m.ID] = &memEntry{m: *c, body: b}
	return nil
}

func (q *MemoryQueue) Lease(ctx context.Context, req LeaseRequest) ([]*QueuedMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	due := req.due()
	type cand struct {
		e    *memEntry
		next time.Time
	}
	var cands []cand
	for _, e := range q.msgs {
		if e.token != "" && req.Now.Before(e.until) {
			continue // held
		}
		var next time.Time
		for _, r := range e.m.Recipients {
			if next.IsZero() || r.NextAttempt.Before(next) {
				next = r.NextAttempt
			}
		}
		if !next.After(due) {
			cands = append(cands, cand{e, next})
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].next.Equal(cands[j].next) {
			return cands[i].next.Before(cands[j].next)
		}
		return cands[i].e.m.ID < cands[j].e.m.ID
	})
	var out []*QueuedMessage
	for _, c := range cands {
		if len(out) == req.Max {
			break
		}
		q.seq++
		c.e.token = strconv.FormatUint(q.seq, 10)
		c.e.until = req.Now.Add(req.Duration)
		m := cloneQueued(&c.e.m)
		m.Lease, m.LeaseUntil = c.e.token, c.e.until
		out = append(out, m)
	}
	return out, nil
}

func (q *MemoryQueue) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.msgs[id]
	if !ok {
		return nil, fmt.Errorf("memqueue: no message %s", id)
	}
	return io.NopCloser(bytes.NewReader(e.body)), nil
}

// held returns the entry when token is its current lease.
func (q *MemoryQueue) held(id, token string) (*memEntry, error) {
	e, ok := q.msgs[id]
	if !ok || token == "" || e.token != token {
		return nil, fmt.Errorf("%w: memqueue: %s: token %q", ErrLeaseLost, id, token)
	}
	return e, nil
}

func (q *MemoryQueue) Update(ctx context.Context, m *QueuedMessage) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, err := q.held(m.ID, m.Lease)
	if err != nil {
		return err
	}
	if len(m.Recipients) == 0 {
		delete(q.msgs, m.ID)
		return nil
	}
	c := cloneQueued(m)
	c.Lease, c.LeaseUntil = "", time.Time{}
	c.RequireTLS = e.m.RequireTLS // set by Enqueue for good (QueueStore's contract)
	e.m, e.token, e.until = *c, "", time.Time{}
	return nil
}

func (q *MemoryQueue) Release(ctx context.Context, id, token string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, err := q.held(id, token); err == nil {
		e.token, e.until = "", time.Time{}
	}
	return nil
}

func (q *MemoryQueue) Quarantine(ctx context.Context, id, token string, reason error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, err := q.held(id, token); err != nil {
		return err
	}
	delete(q.msgs, id)
	if q.aside == nil {
		q.aside = make(map[string]error)
	}
	q.aside[id] = reason
	return nil
}

func (q *MemoryQueue) List(ctx context.Context) ([]*QueuedMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*QueuedMessage, 0, len(q.msgs))
	for _, e := range q.msgs {
		out = append(out, cloneQueued(&e.m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// TakeQuarantined hands over what setAside put there, as the directory
// store does with the files it could not read at open.
func (q *MemoryQueue) TakeQuarantined() map[string]error {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending
	q.pending = nil
	return p
}

// edit changes a stored message in place, as someone with access to the
// store could: the Mailer must check what it reads back.
func (q *MemoryQueue) edit(id string, f func(m *QueuedMessage, body *[]byte)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.msgs[id]
	f(&e.m, &e.body)
}

// setAside removes a message as damaged outside any lease and queues it
// for TakeQuarantined.
func (q *MemoryQueue) setAside(id string, reason error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.msgs, id)
	if q.pending == nil {
		q.pending = make(map[string]error)
	}
	q.pending[id] = reason
}

// quarantined returns why id was quarantined; nil when it was not.
func (q *MemoryQueue) quarantined(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.aside[id]
}
