package smtptest

import (
	"sync"

	"github.com/emersion/go-smtp"
)

// Greylist returns a RcptPolicy that defers the first n attempts of each
// recipient with "450 4.2.0 Greylisted", as greylisting MX hosts do, and
// accepts the ones after.
func Greylist(n int) func(rcpt string) *smtp.SMTPError {
	var mu sync.Mutex
	seen := make(map[string]int)
	return func(rcpt string) *smtp.SMTPError {
		mu.Lock()
		defer mu.Unlock()
		seen[rcpt]++
		if seen[rcpt] <= n {
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, please try again later"}
		}
		return nil
	}
}
