package mailroute

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/mailroute/go-mailroute/internal/message"
	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// job is one destination's share of a Send: its recipients, and where
// their results go. Only the goroutine delivering the job writes them.
type job struct {
	dest *Destination // &destVal, or the Send's own (sendCall)
	// destVal, oneRcpt and oneIndex are allocated with the job: a job's
	// Destination and, for the common single recipient, its lists.
	destVal  Destination
	oneRcpt  [1]message.Address
	oneIndex [1]int
	// Reused by each transaction of the job, one after the other (only
	// the goroutine delivering the job runs them): the Tx, its recipient
	// list, the body's reader and the engine's result.
	txVal   smtpclient.Tx
	txRcpts []string
	txBody  bytes.Reader
	txRes   smtpclient.TxResult
	// Their first backing arrays, for a job of one recipient.
	oneTxRcpt   [1]string
	oneRcptRes  [1]smtpclient.RcptResult
	oneAccepted [1]string
	// tlsVal is the destination's TLS policy while deliverDirect runs.
	tlsVal destTLS
	// The MX list and one host's addresses while deliverDirect runs, in
	// arrays of the job for the common few.
	mxHosts   [2]*net.MX
	mxRecords [2]net.MX
	addrs     [4]netip.Addr
	// jobsOf1 backs the job list of a Send with this job alone.
	jobsOf1 [1]*job
	route   Route
	from    string // reverse-path as on the wire; "" = <>
	utf8    bool   // the sender's local part needs SMTPUTF8
	rcpts   []message.Address
	index   []int // rcpts[k]'s place in result.Recipients
	body    *message.Body
	relay   *smarthost // the relay for this Send; nil: none configured
	// forceRelay sends through the relay without routing: the queue's
	// fallback over time (route holds the reason).
	forceRelay bool
	result     *Result
	// requireTLS: the message carries REQUIRETLS (WithREQUIRETLS).
	requireTLS bool
	// noTLSReq memoises tlsRequiredNo: 0 unknown, 1 yes, 2 no.
	noTLSReq uint8
}

// pending lists the job's recipients (indices into rcpts).
func (j *job) pending() []int {
	out := make([]int, len(j.rcpts))
	for k := range out {
		out[k] = k
	}
	return out
}

// tx builds the transaction for a batch of recipients, in the job's own
// Tx: each transaction of the job is done with before the next is built.
// Its reader is the job's own over the shared body: no copy per route.
func (j *job) tx(batch []int) *smtpclient.Tx {
	rcpts := j.txRcpts[:0]
	utf8 := j.utf8
	for _, k := range batch {
		rcpts = append(rcpts, j.slot(k).Rcpt) // the address as on the wire, made once
		utf8 = utf8 || j.rcpts[k].UTF8
	}
	j.txRcpts = rcpts
	j.txVal = smtpclient.Tx{
		From:       j.from,
		Rcpts:      rcpts,
		Body:       j.body.ReaderInto(&j.txBody),
		Size:       j.body.Size(),
		EightBit:   j.body.EightBit(),
		SMTPUTF8:   utf8,
		REQUIRETLS: j.requireTLS,
	}
	return &j.txVal
}

// send runs tx on c into the job's reused result; see tx.
func (j *job) send(ctx context.Context, c *smtpclient.Conn, tx *smtpclient.Tx) (*smtpclient.TxResult, error) {
	return c.SendInto(ctx, tx, &j.txRes)
}

func (j *job) slot(k int) *RecipientResult { return &j.result.Recipients[j.index[k]] }

// record stores a transaction's per-recipient outcomes.
func (j *job) record(batch []int, res *smtpclient.TxResult, host string, via Via) {
	for i, k := range batch {
		j.recordOne(k, res, i, host, via)
	}
}

// recordOne records the outcome of recipient k, the i-th of res.
func (j *job) recordOne(k int, res *smtpclient.TxResult, i int, host string, via Via) {
	r := j.slot(k)
	r.Via, r.Route, r.Host = via, j.route, host
	rr := res.Rcpts[i]
	if rr.Err == nil {
		r.Status, r.Err = Delivered, nil
		r.Response = res.Response
		return
	}
	e := fromClient(rr.Err, nil)
	if e.Host == "" {
		e.Host = host
	}
	r.Err = e
	r.Status = statusOf(e)
}

// fail gives every recipient of a batch the same error.
func (j *job) fail(batch []int, e *Error, host string) {
	for _, k := range batch {
		r := j.slot(k)
		r.Via, r.Route, r.Host = j.route.Via, j.route, host
		r.Err, r.Status = e, statusOf(e)
	}
}

func (j *job) failAll(e *Error, host string) { j.fail(j.pending(), e, host) }

func statusOf(e *Error) Status {
	if e.Permanent {
		return Failed
	}
	return Deferred
}

// withoutSMTPUTF8 handles a server that lacks SMTPUTF8 (RFC 6531): the
// recipients whose addresses need it fail permanently, on their own, and
// the rest of the batch is returned to be sent as usual. When the sender's
// address needs it, nothing can be sent.
func (j *job) withoutSMTPUTF8(c *smtpclient.Conn, batch []int, via Via) []int {
	if !j.utf8 && !slices.ContainsFunc(batch, func(k int) bool { return j.rcpts[k].UTF8 }) {
		return batch // nothing here needs it (asked first: it costs no lookup)
	}
	if _, ok := c.Extension("SMTPUTF8"); ok {
		return batch
	}
	refuse := func(k int) {
		r := j.slot(k)
		r.Via, r.Route, r.Host = via, j.route, c.Host()
		r.Status = Failed
		r.Err = &Error{Command: "MAIL", Host: c.Host(), Permanent: true,
			Err: fmt.Errorf("%w: the address needs an internationalised mail server (RFC 6531)", ErrSMTPUTF8Required)}
	}
	var rest []int
	for _, k := range batch {
		if j.utf8 || j.rcpts[k].UTF8 {
			refuse(k)
		} else {
			rest = append(rest, k)
		}
	}
	return rest
}
