package chat

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"chatserver/internal/protocol"
)

const (
	// readBufferBytes is how much one read asks the kernel for: many
	// pipelined requests are parsed per read.
	readBufferBytes = 16 << 10
	// flushRepliesBytes is how many reply bytes a read loop gathers before
	// it queues them, even in the middle of a chunk, so that a chunk of
	// LIST requests cannot build an unbounded batch.
	flushRepliesBytes = 64 << 10
)

// session is one client connection.
type session struct {
	srv  *Server
	conn net.Conn
	log  *slog.Logger
	out  *outbox // filled by anyone, drained by the write loop

	// Owned by the read loop.
	framer     *protocol.Framer
	handleLine func(line []byte, err error) bool // s.handle, bound once
	name       string                            // "" until logged in
	replies    []byte                            // replies not yet queued
	tally      tally                             // counts not yet added to srv.counters
	stop       CloseReason                       // why handle returned false

	endOnce    sync.Once
	reason     CloseReason   // set once by end; read after both loops exit
	writerDone chan struct{} // closed when the write loop has returned
}

func newSession(srv *Server, conn net.Conn, log *slog.Logger) *session {
	s := &session{
		srv:        srv,
		conn:       conn,
		log:        log,
		out:        newOutbox(srv.cfg.MaxPendingBytes),
		framer:     protocol.NewFramer(srv.cfg.MaxLineBytes),
		writerDone: make(chan struct{}),
	}
	s.handleLine = s.handle
	return s
}

// run serves the connection until it ends, then cleans up after it.
func (s *session) run() {
	if tcp, ok := s.conn.(*net.TCPConn); ok {
		// Finds peers that vanished without a FIN or RST.
		_ = tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 15 * time.Second, Count: 4})
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.LoginTimeout))
	go s.writeLoop()

	reason := s.readLoop()
	s.srv.counters.add(&s.tally)
	if s.name != "" {
		s.logout()
	}
	s.end(reason)
	<-s.writerDone
	s.conn.Close()
	s.srv.forget(s)
}

// end ends the connection with reason; only the first reason counts. The
// outbound queue takes nothing more. When the client closed its side, the
// write loop still sends what is queued (a half-closed client reads its
// replies, bounded by WriteTimeout); for any other reason the socket is
// closed at once, which stops both loops. Safe from any goroutine, and
// more than once: Shutdown's end closes a socket that is still draining.
func (s *session) end(reason CloseReason) {
	s.endOnce.Do(func() {
		s.reason = reason
		s.out.close()
	})
	if reason != ReasonClientClosed {
		s.conn.Close()
	}
}

// readLoop reads and handles requests until the connection ends, and
// returns why it ended. A panic while handling ends only this connection.
func (s *session) readLoop() (reason CloseReason) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in connection handler", "panic", p, "stack", string(debug.Stack()))
			reason = ReasonInternalError
		}
	}()
	buf := make([]byte, readBufferBytes)
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			s.tally.bytesIn += uint64(n)
			if !s.framer.Feed(buf[:n], s.handleLine) || !s.flushReplies() {
				return s.stop
			}
		}
		if err != nil {
			return readErrorReason(err)
		}
	}
}

func readErrorReason(err error) CloseReason {
	switch {
	case errors.Is(err, io.EOF):
		return ReasonClientClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonLoginTimeout // the only read deadline is the login's
	}
	return ReasonReset
}

// writeLoop writes whatever is queued, in as few writes as it can, until
// the queue is closed and empty or a write fails.
func (s *session) writeLoop() {
	defer close(s.writerDone)
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in connection writer", "panic", p, "stack", string(debug.Stack()))
			s.end(ReasonInternalError)
		}
	}()
	var batch []byte
	for range s.out.wake {
		var closed bool
		batch, closed = s.out.take(batch)
		if len(batch) > 0 {
			_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.WriteTimeout))
			n, err := s.conn.Write(batch)
			s.srv.counters.bytesOut.Add(uint64(n))
			if err != nil {
				s.end(writeErrorReason(err))
				return
			}
		}
		if closed {
			return
		}
	}
}

func writeErrorReason(err error) CloseReason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonSlowConsumer
	}
	return ReasonReset
}

// handle answers one line, or one line that was too long (err). It returns
// false when the connection must end, with the reason in s.stop.
func (s *session) handle(line []byte, err error) bool {
	if hook := s.srv.testHookLine; hook != nil {
		hook(line)
	}
	if err == nil {
		err = s.dispatch(line)
	}
	if perr, ok := err.(*protocol.Error); ok {
		s.reply(perr.Reply)
	}
	if len(s.replies) >= flushRepliesBytes {
		return s.flushReplies()
	}
	return true
}

// dispatch runs one request, appending its replies, and returns the
// protocol error to answer instead, if any. The checks run in the
// protocol's order: header, login state, body, then the request itself.
func (s *session) dispatch(line []byte) error {
	req, err := protocol.Parse(line)
	loggedIn := s.name != ""
	switch {
	case req.Command == protocol.CmdUnknown:
		return protocol.ErrBadHeader
	case loggedIn == (req.Command == protocol.CmdHelloFrom):
		// HELLO-FROM is the only request before login, and not allowed after.
		return protocol.ErrBadHeader
	case err != nil:
		if req.Command == protocol.CmdHelloFrom {
			s.srv.counters.logins[LoginBadName].Add(1)
		}
		return err
	}
	switch req.Command {
	case protocol.CmdHelloFrom:
		s.login(req.Name)
	case protocol.CmdList:
		s.replies = protocol.AppendListOK(s.replies, s.srv.users.names(nil))
		s.tally.replies[protocol.ReplyListOK]++
	case protocol.CmdSend:
		s.send(req.Name, req.Message)
	}
	return nil
}

func (s *session) login(name []byte) {
	claimed, err := s.srv.users.login(name, s)
	if err != nil {
		result, reply := loginOutcome(err)
		s.srv.counters.logins[result].Add(1)
		s.reply(reply)
		return
	}
	s.name = claimed
	s.srv.counters.logins[LoginOK].Add(1)
	s.srv.counters.users.Add(1)
	_ = s.conn.SetReadDeadline(time.Time{}) // no idle timeout once logged in
	s.log.Info("login", "user", s.name)
	s.replies = protocol.AppendHello(s.replies, s.name)
	s.tally.replies[protocol.ReplyHello]++
}

// logout frees the session's name. The read loop calls it as soon as it
// stops, so the name is free again with no delay.
func (s *session) logout() {
	if s.srv.users.logout(s.name, s) {
		s.srv.counters.users.Add(-1)
		s.log.Info("logout", "user", s.name)
	}
}

// loginOutcome is the one place a failed login becomes a wire reply.
func loginOutcome(err error) (LoginResult, protocol.ReplyKind) {
	if errors.Is(err, ErrNameTaken) {
		return LoginInUse, protocol.ReplyInUse
	}
	return LoginBusy, protocol.ReplyBusy
}

// send queues a DELIVERY on the recipient, then a SEND-OK for the sender.
// It never waits on the recipient's socket: a recipient whose queue is
// full is ended as a slow consumer and the sender told BAD-DEST-USER.
func (s *session) send(toName, message []byte) {
	to := s.srv.users.lookup(toName)
	res := closed
	switch to {
	case nil:
	case s:
		// Our own replies are queued in order, so the DELIVERY goes with them.
		s.replies = protocol.AppendDelivery(s.replies, s.name, message)
		res = pushed
	default:
		res = to.out.pushDelivery(s.name, message)
	}
	switch res {
	case pushed:
		s.tally.replies[protocol.ReplyDelivery]++
		s.tally.delivered++
		s.reply(protocol.ReplySendOK)
		return
	case overflow:
		to.log.Warn("slow consumer: outbound queue full", "limit", s.srv.cfg.MaxPendingBytes)
		to.end(ReasonSlowConsumer)
	}
	s.reply(protocol.ReplyBadDestUser)
}

// reply appends a reply without a body and counts it.
func (s *session) reply(k protocol.ReplyKind) {
	s.replies = protocol.AppendReply(s.replies, k)
	s.tally.replies[k]++
}

// flushReplies queues the replies gathered so far on our own connection.
func (s *session) flushReplies() bool {
	s.srv.counters.add(&s.tally)
	res := s.out.push(s.replies)
	s.replies = s.replies[:0]
	if cap(s.replies) > keepOutboxBytes {
		s.replies = nil
	}
	switch res {
	case overflow:
		s.log.Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
		s.stop = ReasonSlowConsumer
		return false
	case closed:
		// Ended elsewhere; end already holds the real reason and will
		// ignore this one.
		s.stop = ReasonReset
		return false
	}
	return true
}
