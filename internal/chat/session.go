package chat

import (
	"errors"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"

	"chatserver/internal/hub"
	"chatserver/internal/protocol"
)

// flushRepliesBytes is how many reply bytes a session gathers before it
// queues them, even in the middle of a chunk, so that a chunk of LIST
// requests cannot build an unbounded batch.
const flushRepliesBytes = 64 << 10

// session is the protocol state of one client connection, whichever
// transport carries it.
type session struct {
	srv    *Server
	id     uint64
	remote netip.AddrPort
	out    *outbox      // filled by anyone, drained by the link
	held   *heldReplies // cluster mode only: replies waiting behind a remote SEND's
	link   link         // set once, before the first byte is received

	// Owned by the reading side: the goroutine or event loop that calls
	// receive.
	framer     *protocol.Framer
	handleLine func(line []byte, err error) bool // s.handle, bound once
	name       string                            // "" until logged in
	replies    []byte                            // replies not yet queued
	lastTo     *session                          // the last local recipient looked up; see recipient
	lastToName string                            // the name lastTo was looked up by
	tally      tally                             // counts not yet added to srv.counters
	stop       CloseReason                       // why handle returned false

	endOnce sync.Once
	reason  CloseReason // set once by end; read by finish
}

// link is what carries a session's bytes: a goroutine pair for any
// net.Conn (connLink), or an event loop for plain TCP on Linux (pollConn).
type link interface {
	// wake says the outbox has bytes to write. Called from any goroutine;
	// never blocks.
	wake()
	// shut stops the connection. Graceful stops reading and writes what
	// is queued first, bounded by WriteTimeout; otherwise the socket
	// closes at once. Called from any goroutine, maybe more than once.
	shut(graceful bool)
	// loggedIn lifts the login timeout.
	loggedIn()
}

func newSession(srv *Server, id uint64, remote netip.AddrPort) *session {
	s := &session{
		srv:    srv,
		id:     id,
		remote: remote,
		out:    newOutbox(srv.cfg.MaxPendingBytes),
		framer: protocol.NewFramer(srv.cfg.MaxLineBytes),
	}
	s.handleLine = s.handle
	if srv.clustered {
		s.held = &heldReplies{}
	}
	return s
}

// log returns the session's logger. It is built per call, not stored:
// logging is rare and an idle connection should stay small.
func (s *session) log() *slog.Logger {
	return s.srv.log.With("conn", s.id, "remote", s.remote.String())
}

// receive handles the next bytes read from the client and queues the
// replies. It returns false when the session must end, with the reason in
// s.stop. A panic while handling ends only this session.
func (s *session) receive(data []byte) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error("panic in connection handler", "panic", p, "stack", string(debug.Stack()))
			s.stop, ok = ReasonInternalError, false
		}
	}()
	s.tally.bytesIn += uint64(len(data))
	return s.framer.Feed(data, s.handleLine) && s.flushReplies()
}

// readEnded is called once the reading side is done, with why. The name is
// freed at once; what is queued may still be written (see link.shut).
func (s *session) readEnded(reason CloseReason) {
	s.srv.counters.add(&s.tally)
	if s.name != "" {
		s.logout()
	}
	if s.held != nil && reason == ReasonClientClosed {
		// Cluster mode: the replies to cross-server SENDs come later;
		// a client that closed only its side still gets them.
		s.held.wait(heldRepliesWait)
	}
	s.end(reason)
}

// end ends the connection with reason; only the first reason counts. The
// outbound queue takes nothing more. Safe from any goroutine, and more than
// once: Shutdown ends a connection gracefully, then at once if it is still
// draining after shutdownDrain.
func (s *session) end(reason CloseReason) {
	s.endOnce.Do(func() {
		s.reason = reason
		s.out.close()
	})
	// On these two what is queued is still written, so that no message
	// acknowledged with SEND-OK is lost to a recipient that reads.
	s.link.shut(reason == ReasonClientClosed || reason == ReasonServerShutdown)
}

// finish is the link's last call, once both its sides are done.
func (s *session) finish() {
	s.srv.forget(s)
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
		s.list()
	case protocol.CmdSend:
		s.send(req.Name, req.Message)
	}
	return nil
}

func (s *session) login(name []byte) {
	claimed := string(name)
	if err := s.srv.hub.Join(claimed, s); err != nil {
		result, reply := loginOutcome(err)
		s.srv.counters.logins[result].Add(1)
		s.reply(reply)
		return
	}
	s.name = claimed
	s.srv.counters.logins[LoginOK].Add(1)
	s.srv.counters.users.Add(1)
	s.link.loggedIn() // no idle timeout once logged in
	s.log().Info("login", "user", s.name)
	s.replies = protocol.AppendHello(s.replies, s.name)
	s.tally.replies[protocol.ReplyHello]++
}

// logout frees the session's name. The reading side calls it as soon as
// it stops, so the name is free again with no delay.
func (s *session) logout() {
	s.srv.hub.Leave(s.name, s)
	s.srv.counters.users.Add(-1)
	s.log().Info("logout", "user", s.name)
}

// list answers LIST.
func (s *session) list() {
	names, err := s.srv.hub.List(nil)
	if err != nil {
		// The cluster could not be read in time; the protocol has no
		// error reply for LIST, so answer with what this server holds.
		s.log().Warn("list failed; answering with this server's users", "err", err)
		names, _ = s.srv.here.List(nil)
	}
	s.replies = protocol.AppendListOK(s.replies, names)
	s.tally.replies[protocol.ReplyListOK]++
}

// loginOutcome is the one place a failed login becomes a wire reply.
func loginOutcome(err error) (LoginResult, protocol.ReplyKind) {
	if errors.Is(err, hub.ErrInUse) {
		return LoginInUse, protocol.ReplyInUse
	}
	return LoginBusy, protocol.ReplyBusy
}

// send queues a DELIVERY on the recipient, then a SEND-OK for the sender.
// It never waits on the recipient's socket: a recipient whose queue is
// full is ended as a slow consumer and the sender told BAD-DEST-USER.
func (s *session) send(toName, message []byte) {
	to, remembered := s.recipient(toName)
	res := s.deliver(to, message)
	if res == closed && remembered {
		// The remembered session ended; the name may be someone else's now.
		s.lastTo = nil
		to, _ = s.recipient(toName)
		res = s.deliver(to, message)
	}
	if to == nil && s.srv.clustered {
		s.sendRemote(toName, message) // not on this server: maybe on another
		return
	}
	switch res {
	case pushed:
		s.tally.replies[protocol.ReplyDelivery]++
		s.tally.delivered++
		s.reply(protocol.ReplySendOK)
		return
	case overflow:
		to.log().Warn("slow consumer: outbound queue full", "limit", s.srv.cfg.MaxPendingBytes)
		to.end(ReasonSlowConsumer)
	}
	s.reply(protocol.ReplyBadDestUser)
}

// recipient returns the session logged in on this server as name, or nil,
// and whether it was remembered from the last SEND. Clients mostly send to
// the same user many times in a row, and remembering skips the hub's lock
// and hash on the hot path. A remembered session stays right until it
// ends; then its outbox is closed, and send asks the hub again.
func (s *session) recipient(name []byte) (*session, bool) {
	if s.lastTo != nil && s.lastToName == string(name) {
		return s.lastTo, true
	}
	s.lastTo, _ = s.srv.here.Lookup(name).(*session)
	if s.lastTo != nil {
		s.lastToName = string(name) // once per new recipient
	}
	return s.lastTo, false
}

// deliver queues a DELIVERY of message from s on to (nil: not logged in).
func (s *session) deliver(to *session, message []byte) pushResult {
	switch to {
	case nil:
		return closed
	case s:
		// Our own replies are queued in order, so the DELIVERY goes with them.
		s.replies = protocol.AppendDelivery(s.replies, s.name, message)
		return pushed
	}
	res := to.out.pushDelivery(s.name, message)
	if res == pushed {
		to.link.wake()
	}
	return res
}

// reply appends a reply without a body and counts it.
func (s *session) reply(k protocol.ReplyKind) {
	s.replies = protocol.AppendReply(s.replies, k)
	s.tally.replies[k]++
}

// flushReplies queues the replies gathered so far on our own connection.
func (s *session) flushReplies() bool {
	s.srv.counters.add(&s.tally)
	if len(s.replies) == 0 {
		return true
	}
	var res pushResult
	if s.held == nil {
		res = s.out.push(s.replies)
	} else {
		res = s.held.push(s, s.replies)
	}
	s.replies = dropBig(s.replies[:0])
	switch res {
	case pushed:
		s.link.wake()
	case overflow:
		s.log().Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
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

// Deliver queues a DELIVERY from a user of another server (hub.Inbox).
// A queue over its cap ends the session as a slow consumer.
func (s *session) Deliver(from string, msg []byte) bool {
	switch s.out.pushDelivery(from, msg) {
	case pushed:
		s.link.wake()
		s.srv.counters.replies[protocol.ReplyDelivery].Add(1)
		return true
	case overflow:
		s.log().Warn("slow consumer: outbound queue full", "limit", s.srv.cfg.MaxPendingBytes)
		s.end(ReasonSlowConsumer)
	}
	return false
}

// Evict ends the session because its name can no longer be vouched for
// (hub.Inbox).
func (s *session) Evict() {
	s.log().Warn("cut off from the cluster: closing the connection")
	s.end(ReasonFenced)
}
