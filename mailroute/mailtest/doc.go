// Package mailtest is a test kit for programs that send mail with
// mailroute: everything a Mailer reaches over the Internet, in-process
// and on loopback, so that tests (and runnable examples) need no network,
// no DNS and no mail server.
//
//   - [NewServer] starts an SMTP receiver that records every message it
//     accepts and can play the servers a sender meets: an MX that refuses
//     or greylists recipients, a relay that requires TLS or AUTH, a slow
//     server.
//   - [Resolver] is a static DNS for Config.Resolver: MX hosts and
//     addresses from two maps.
//   - [NewCA] is a throwaway certificate authority: certificates for the
//     servers, and the pool a Relay's TLSConfig trusts.
//
// A typical test points a Mailer at a recording relay and asserts what
// arrived:
//
//	ca, _ := mailtest.NewCA()
//	relay, _ := mailtest.NewServer(mailtest.Options{
//		TLS:   ca.ServerConfig("127.0.0.1"),
//		Users: map[string]string{"app": "secret"},
//	})
//	defer relay.Close()
//	m, _ := mailroute.New(mailroute.Config{
//		Hostname:  "mail.example.net",
//		Relay: &mailroute.Relay{Addr: relay.Addr, Username: "app", Password: "secret", TLSConfig: ca.ClientConfig()},
//	})
//	…
//	msgs := relay.Messages()
//
// Direct delivery dials every MX host on one port (DirectOptions.Port),
// as real MX hosts all listen on 25: give each MX its own loopback
// address (127.0.0.2, 127.0.0.3, … all reach this host on Linux) with
// [Options.Addr] on the first server's port, and map the MX host names to
// those addresses in the Resolver.
package mailtest
