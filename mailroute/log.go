package mailroute

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// attrs are the fields of one delivery attempt's log line.
func attrs(j *job, via Via, host string, rcpts int, e *Error, d time.Duration) []slog.Attr {
	a := []slog.Attr{
		slog.String("domain", j.dest.Domain),
		slog.String("via", via.String()),
		slog.String("host", host),
		slog.Int("recipients", rcpts),
		slog.Duration("duration", d),
	}
	if e != nil {
		a = append(a,
			slog.Int("code", e.Code),
			slog.String("enhanced", e.Enhanced.String()),
			slog.String("command", e.Command),
			slog.String("class", errorClassOf(e)),
			slog.String("verdict", Explain(e).String()),
			slog.String("error", e.Error()),
		)
	}
	return a
}

func levelOf(e *Error) slog.Level {
	switch {
	case e == nil:
		return slog.LevelInfo
	case errorClassOf(e) == "configuration":
		return slog.LevelError
	}
	return slog.LevelWarn
}

// logClock is the start of an attempt for the log's duration field: the
// clock is read only when a Logger is configured (twice a message, it is
// not free).
func (m *Mailer) logClock() time.Time {
	if m.cfg.Logger == nil {
		return time.Time{}
	}
	return time.Now()
}

// noClock is logAttempt's start for an attempt that took no time to
// speak of (a refusal decided before any connection).
var noClock time.Time

// since is the duration of an attempt that started at start (logClock);
// 0 when it is zero.
func since(start time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return time.Since(start)
}

// logAttempt logs a failed attempt that did not decide any recipient.
// start is from logClock, zero when the attempt took no time to speak of.
func (m *Mailer) logAttempt(j *job, via Via, host string, batch []int, e *Error, start time.Time) {
	if !m.cfg.logger().Enabled(context.Background(), levelOf(e)) {
		return
	}
	m.cfg.logger().LogAttrs(context.Background(), levelOf(e), "mailroute: delivery attempt",
		attrs(j, via, host, len(batch), e, since(start))...)
}

// logTx logs a transaction that decided its recipients.
func (m *Mailer) logTx(j *job, via Via, host string, batch []int, res *smtpclient.TxResult, err error, start time.Time) {
	var e *Error
	if err != nil {
		e = fromClient(err, nil)
	}
	if !m.cfg.logger().Enabled(context.Background(), levelOf(e)) {
		return // building the fields costs allocations nobody reads
	}
	d := since(start)
	delivered := 0
	for _, r := range res.Rcpts {
		if r.Err == nil {
			delivered++
		}
	}
	a := attrs(j, via, host, len(batch), e, d)
	a = append(a, slog.Int("delivered", delivered), slog.String("tls", j.slot(batch[0]).TLS.String()))
	if delivered > 0 && e == nil {
		a = append(a, slog.Int("code", res.Data.Code))
	}
	m.cfg.logger().LogAttrs(context.Background(), levelOf(e), "mailroute: delivery attempt", a...)
}

// errorClassOf is a short word for the log.
func errorClassOf(e *Error) string {
	switch {
	case e == nil:
		return ""
	case errors.Is(e, ErrRelayAuth), errors.Is(e, ErrRelayTLS), errors.Is(e, ErrNoRelay):
		return "configuration"
	case e.Permanent:
		return "permanent"
	}
	return "temporary"
}
