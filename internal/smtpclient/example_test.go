package smtpclient_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mailroute/go-mailroute/internal/smtpclient"
)

// A relay session: STARTTLS with a verified certificate, AUTH with the
// mechanism the server prefers, one message, QUIT.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := smtpclient.Dial(ctx, "192.0.2.10:587", "smtp.relay.example", &smtpclient.Config{
		LocalName: "app.example.com",
		TLS:       smtpclient.TLSRequired,
		Username:  "user",
		Password:  "secret",
	})
	if err != nil {
		fmt.Println(err) // e.g. errors.Is(err, smtpclient.ErrAuthFailed)
		return
	}
	defer c.Quit(ctx)

	body := "From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
	res, err := c.Send(ctx, &smtpclient.Tx{
		From:  "a@example.com",
		Rcpts: []string{"b@example.org", "c@example.org"},
		Body:  strings.NewReader(body),
		Size:  int64(len(body)),
	})
	if err != nil {
		fmt.Println("transaction failed:", err)
	}
	for _, r := range res.Rcpts {
		if r.Err != nil {
			fmt.Println(r.Rcpt, "failed, permanent:", smtpclient.IsPermanent(r.Err))
		}
	}
}
