package mailroute

import "context"

// QueueNotifier is an optional interface of a QueueStore shared by several
// instances: it tells a Mailer at once when mail may have become due in
// the store, instead of the Mailer finding out at its next poll of the
// queue (every second). A store on a database implements it with the
// database's notifications, so that mail one instance enqueues is started
// by another within milliseconds of the commit.
//
// The Mailer calls Notify once, when it starts its queue, in a goroutine
// of its own; Notify calls wake whenever mail may have become due —
// spurious calls cost one lease query — and returns when ctx ends, which
// happens when the Mailer shuts down. Notify must survive a lost
// connection by itself (reconnecting); the Mailer's poll covers what it
// missed meanwhile, so a Notify that gives up only makes mail slower.
type QueueNotifier interface {
	Notify(ctx context.Context, wake func())
}

// startNotifier runs the store's notifier, when it has one, until the
// queue stops.
func (q *queueRuntime) startNotifier() {
	n, ok := q.store.(QueueNotifier)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.stopped.Add(1)
	go func() {
		defer q.stopped.Done()
		<-q.stop
		cancel()
	}()
	q.stopped.Add(1)
	go func() {
		defer q.stopped.Done()
		n.Notify(ctx, q.poke)
	}()
}
