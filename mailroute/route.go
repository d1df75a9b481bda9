package mailroute

import (
	"context"
	"errors"
	"fmt"
)

// Via is the path a message takes to a destination.
type Via uint8

const (
	// Direct delivers from this host to the destination's MX hosts (port 25).
	Direct Via = 1
	// Relayed hands the message to the configured relay.
	Relayed Via = 2
)

// String returns "direct", "relay", or "none" for the zero value.
func (v Via) String() string {
	switch v {
	case Direct:
		return "direct"
	case Relayed:
		return "relay"
	case 0:
		return "none"
	}
	return fmt.Sprintf("Via(%d)", uint8(v))
}

// Route is a routing decision: the path and the evidence for it.
type Route struct {
	Via Via
	// Relay names the relay of Config.Relays to use: the one that
	// delivers a Relayed route, and the fallback of a Direct one. "":
	// the sender's relay (Config.SenderRelays), else Config.Relay.
	Relay string
	// Reason says which rule or provider decided, and what it saw, e.g.
	// `every MX of acme.com is Google (aspmx.l.google.com)`.
	Reason string
}

// Router decides the route of one destination domain. It never delivers;
// it may look at the domain's MX hosts through d.MX. A zero Via with a nil
// error means "no decision", which lets routers be chained (see Chain).
type Router interface {
	Route(ctx context.Context, d *Destination) (Route, error)
}

// RouterFunc adapts a function to the Router interface.
type RouterFunc func(ctx context.Context, d *Destination) (Route, error)

// Route calls f.
func (f RouterFunc) Route(ctx context.Context, d *Destination) (Route, error) { return f(ctx, d) }

var _ Router = RouterFunc(nil)

// ErrNoRoute is returned when no router or rule decided a destination's
// route. Rules end with a "*" rule to avoid it.
var ErrNoRoute = errors.New("mailroute: no route matches")

// Chain asks each router in turn and returns the first decision. A router
// that returns a zero Via, with a nil error or an error wrapping ErrNoRoute,
// passes to the next; any other error stops the chain. When nobody decides,
// the result wraps ErrNoRoute.
func Chain(routers ...Router) Router {
	return RouterFunc(func(ctx context.Context, d *Destination) (Route, error) {
		for _, r := range routers {
			route, err := r.Route(ctx, d)
			if err != nil && !errors.Is(err, ErrNoRoute) {
				return Route{}, err
			}
			if err == nil && route.Via != 0 {
				return route, nil
			}
		}
		return Route{}, fmt.Errorf("%w for %s", ErrNoRoute, d.Domain)
	})
}
