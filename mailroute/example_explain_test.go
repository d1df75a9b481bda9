package mailroute_test

import (
	"fmt"

	"github.com/mailroute/go-mailroute/mailroute"
)

// Explain says what kind of failure a recipient's error is and which words
// or codes of the reply decided it. Words inside what the server echoes —
// here the address nospam@example.org — decide nothing.
func ExampleExplain() {
	for _, err := range []error{
		&mailroute.Error{Code: 554, Enhanced: mailroute.EnhancedCode{5, 7, 1}, Command: "RCPT",
			Message: "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"},
		&mailroute.Error{Code: 550, Enhanced: mailroute.EnhancedCode{5, 1, 1}, Command: "RCPT",
			Message: "<nospam@example.org>: Recipient address rejected: User unknown in local recipient table"},
		&mailroute.Error{Code: 451, Enhanced: mailroute.EnhancedCode{4, 7, 1}, Command: "DATA", Message: "Try again later"},
		&mailroute.Error{Code: 421, Enhanced: mailroute.EnhancedCode{4, 7, 0}, Command: "MAIL",
			Message: "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"},
	} {
		fmt.Println(mailroute.Explain(err), "→ fall back:", mailroute.FallbackPolicy{}.ShouldFallback(err))
	}
	// Output:
	// policy: "blocked using zen.spamhaus.org" → fall back: true
	// mailbox: "User unknown" → fall back: false
	// temporary: 4.7.1 → fall back: false
	// policy: "TSS04" → fall back: true
}
