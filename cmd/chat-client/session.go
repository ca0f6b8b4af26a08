package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"chatserver/internal/client"
	"chatserver/internal/protocol"
)

// session is the client's state once connected.
type session struct {
	opts    options
	out     console
	input   <-chan string
	conn    *client.Conn
	printed chan struct{} // closed when conn's deliveries are all printed
}

// attach makes conn the session's connection and prints its deliveries
// as they arrive.
func (s *session) attach(conn *client.Conn) {
	s.conn, s.printed = conn, make(chan struct{})
	go printDeliveries(s.out, conn, s.printed)
}

// detach closes the connection, once every delivery it brought is
// printed. Calling it again does nothing more.
func (s *session) detach() {
	s.conn.Close() // closes Deliveries, which ends printDeliveries
	<-s.printed
}

// printDeliveries prints each message for the user as it arrives, until
// conn's Deliveries channel is closed.
func printDeliveries(out console, conn *client.Conn, printed chan<- struct{}) {
	defer close(printed)
	for d := range conn.Deliveries() {
		out.println(fmt.Sprintf(textDelivery, sanitize(d.From), sanitize(d.Message)))
	}
}

// ended reports whether the connection has ended.
func (s *session) ended() bool {
	select {
	case <-s.conn.Done():
		return true
	default:
		return false
	}
}

// login asks for names until one is accepted (true), the user quits
// (false) or the session cannot go on (an error). After the server refused
// a name, a closed connection is how some servers go on (the course's
// closes it after IN-USE): then the next name is tried on a new one.
func (s *session) login(ctx context.Context) (bool, error) {
	s.out.println(textWelcome)
	refused := false // the server refused the last name
	for {
		ended := s.conn.Done()
		if refused {
			ended = nil // not the end: the next name reconnects
		}
		var name string
		select {
		case <-ctx.Done():
			return false, nil
		case <-ended:
			return false, s.connectionEnded()
		case line, ok := <-s.input:
			if !ok || line == "!quit" {
				return false, nil
			}
			name = line
		}
		if why := nameRejection(name); why != "" {
			s.out.println(why, textTryAgain)
			continue
		}
		err := s.tryLogin(ctx, name, refused)
		refused = false
		var reqErr *client.RequestError
		switch {
		case err == nil:
			s.out.println(fmt.Sprintf(textLoggedIn, name))
			return true, nil
		case errors.Is(err, errNoReconnect):
			s.out.println(textConnectError)
			return false, err
		case errors.Is(err, client.ErrNameInUse):
			s.out.println(fmt.Sprintf(textInUse, name), textTryAgain)
			refused = true
		case errors.As(err, &reqErr) && reqErr.Reply == protocol.ReplyBadBody:
			s.out.println(fmt.Sprintf(textDisallowed, sanitize(name)), textTryAgain) // by this server's rules
			refused = true
		case errors.Is(err, client.ErrServerBusy):
			s.out.println(textBusy)
			return false, err
		default:
			if stop, err := s.failed(ctx, err); stop {
				return false, err
			}
		}
	}
}

// errNoReconnect wraps the error of a reconnection that failed.
var errNoReconnect = errors.New("reconnect")

// tryLogin logs in as name. After a refusal (afterRefusal), a connection
// the server closed, before the request or while it was on the way, is
// replaced once by a new one.
func (s *session) tryLogin(ctx context.Context, name string, afterRefusal bool) error {
	if afterRefusal && s.ended() {
		if err := s.reconnect(ctx); err != nil {
			return err
		}
		afterRefusal = false
	}
	err := s.conn.Login(ctx, name)
	if afterRefusal && errors.Is(err, client.ErrClosed) && ctx.Err() == nil {
		if err := s.reconnect(ctx); err != nil {
			return err
		}
		err = s.conn.Login(ctx, name)
	}
	return err
}

// reconnect replaces the ended connection by a new one. If it fails, the
// old one stays, closed (detach may be called again).
func (s *session) reconnect(ctx context.Context) error {
	s.detach()
	conn, err := connect(ctx, s.opts)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoReconnect, err)
	}
	s.attach(conn)
	return nil
}

// commands runs the user's commands until they quit or the session cannot
// go on.
func (s *session) commands(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.conn.Done():
			return s.connectionEnded()
		case line, ok := <-s.input:
			if !ok || line == "!quit" {
				return nil
			}
			if stop, err := s.command(ctx, line); stop {
				return err
			}
		}
	}
}

// command runs one command line, and reports whether the session must
// stop, and with what error.
func (s *session) command(ctx context.Context, line string) (bool, error) {
	switch {
	case line == "!who":
		names, err := s.conn.List(ctx)
		if err != nil {
			return s.failed(ctx, err)
		}
		lines := []string{textWho(len(names))}
		for _, n := range names {
			lines = append(lines, fmt.Sprintf(textWhoUser, sanitize(n)))
		}
		s.out.println(lines...)
	case strings.HasPrefix(line, "@"):
		to, msg, _ := strings.Cut(line[1:], " ")
		if why := sendRejection(to, msg); why != "" {
			s.out.println(why)
			return false, nil
		}
		err := s.conn.Send(ctx, to, msg)
		switch {
		case err == nil:
			s.out.println(textSent)
		case errors.Is(err, client.ErrBadDestUser):
			s.out.println(textBadDestUser)
		default:
			return s.failed(ctx, err)
		}
	default:
		s.out.println(textUnknownCommand)
	}
	return false, nil
}

// failed handles a call's error that is not one of its own outcomes: it
// prints what the user must know and reports whether the session must
// stop, and with what error.
func (s *session) failed(ctx context.Context, err error) (bool, error) {
	var reqErr *client.RequestError
	switch {
	case errors.As(err, &reqErr) && reqErr.Reply == protocol.ReplyBadHeader:
		s.out.println(textBadHeader)
		return false, nil
	case errors.As(err, &reqErr), errors.Is(err, client.ErrLineBreak):
		// A refusal by the server's own rules (a line cap, say).
		s.out.println(textBadBody)
		return false, nil
	case ctx.Err() != nil:
		return true, nil // interrupted: quit
	case errors.Is(err, client.ErrClosed):
		<-s.conn.Done()
		return true, s.connectionEnded()
	}
	return true, err // the server broke the protocol
}

// connectionEnded tells the user the connection is gone, after every
// message that arrived before the end, and returns why it ended.
func (s *session) connectionEnded() error {
	<-s.printed // the Deliveries channel closes once all are taken
	err := s.conn.Err()
	if errors.Is(err, client.ErrServerBusy) {
		// Refused outright: the server has too many connections.
		s.out.println(textBusy)
	} else {
		s.out.println(textServerClosed)
	}
	return err
}
