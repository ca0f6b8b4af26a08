package chat

import (
	"bytes"
	"cmp"
	"errors"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"chatserver/internal/protocol"
)

const (
	// flushRepliesBytes is how many reply bytes a session gathers before
	// it queues them, even in the middle of a chunk, so that a chunk of
	// LIST requests cannot build an unbounded batch.
	flushRepliesBytes = 64 << 10
	// preLoginMaxLine caps a line before login: the only request allowed
	// then, HELLO-FROM with a name, takes at most 76 bytes, and a
	// connection that has not logged in should cost the server little.
	preLoginMaxLine = 512
)

// session is the protocol state of one client connection, whichever
// transport carries it.
type session struct {
	srv       *Server
	id        uint64
	remote    netip.AddrPort
	transport Transport // set once, before admit
	overTLS   bool
	out       *outbox      // filled by anyone, drained by the link
	held      *heldReplies // cluster mode only: replies waiting behind a forward's
	link      link         // set once, before the first byte is received

	// Owned by the reading side: the goroutine or event loop that calls
	// receive.
	framer     protocol.Framer
	claim      Claim    // Name is "" until logged in
	replies    []byte   // replies not yet queued
	lastTo     *session // the last local recipient looked up; see recipient
	lastToName string   // the name lastTo was looked up by
	// DELIVERYs to one local user (batchTo), gathered over a chunk and
	// queued at once (flushDeliveries): one lock and one wake per
	// recipient and chunk, not per message. Their SEND-OKs are replied
	// when they are queued, so any other reply waits for that.
	batchTo    *session
	batch      []byte
	batchSends int    // the SENDs in batch
	tally      tally  // counts not yet added to srv.counters
	bucket     bucket // flood control
	pending    []byte // read, not yet handled: flood control or an offload holds it back
	// Cluster mode on an event loop, which must not wait: a request that
	// would wait on the cluster stops handling (errOffload), and the link
	// hands the rest to a goroutine of its own (offload), where mayBlock
	// is set. A goroutine pair's or a bot's session always has mayBlock.
	offloadLine []byte // the line that must wait, handled again by offload
	mayBlock    bool
	forwarded   bool        // a SEND was forwarded and not yet flushed (flushForwards)
	offloadNow  bool        // handle stopped for an offload
	throttled   bool        // handle stopped for flood control, not to end the session
	stop        CloseReason // why handle returned false
	// (The small fields sit together: an idle server holds a session per
	// user, and padding between them would cost a bigger size class.)

	prev, next *session // guarded by registry.mu: the login order

	endOnce sync.Once
	ended   atomic.Bool // set by end: the rest of a chunk being read is not handled
	reason  CloseReason // set once by end; read by closed
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
	}
	s.framer.SetMaxLine(min(preLoginMaxLine, srv.cfg.MaxLineBytes))
	if srv.cluster != nil {
		s.held = newHeldReplies()
	}
	return s
}

// log returns the session's logger. It is built per call, not stored:
// logging is rare and an idle connection should stay small.
func (s *session) log() *slog.Logger {
	if s.transport == TransportBot {
		return s.srv.log.With("conn", s.id, "transport", s.transport.String())
	}
	log := s.srv.log.With("conn", s.id, "remote", s.remote.String())
	if s.overTLS {
		log = log.With("tls", true)
	}
	if s.transport == TransportWS {
		log = log.With("transport", s.transport.String())
	}
	return log
}

// receive handles the next bytes read from the client and queues the
// replies. It returns false when the session must end, with the reason in
// s.stop; otherwise how long the link must wait before the session goes
// on (flood control), and then the link calls resume before it reads
// again. A panic while handling ends only this session.
func (s *session) receive(data []byte) (wait time.Duration, ok bool) {
	s.tally.bytesIn += uint32(len(data))
	return s.handleInput(data)
}

// resume goes on with what flood control held back, as receive does.
func (s *session) resume() (wait time.Duration, ok bool) {
	return s.handleInput(s.pending)
}

// offloading reports whether handling stopped at a request that must
// wait on the cluster: the link must call offload on a goroutine of its
// own, and neither read nor resume until offload is done.
func (s *session) offloading() bool {
	return s.offloadNow
}

// offload handles what handleInput left to it (offloading), on the
// calling goroutine, which may wait on the cluster, and then tells done
// what receive would have returned. The link reads nothing meanwhile.
func (s *session) offload(done func(wait time.Duration, ok bool)) {
	s.offloadNow, s.mayBlock = false, true
	wait, ok := s.handleInput(s.pending)
	s.mayBlock = false
	done(wait, ok)
}

// holdingBack reports whether flood control holds back part of what was
// read: the link must call resume, not read.
func (s *session) holdingBack() bool {
	return len(s.pending) > 0
}

func (s *session) handleInput(data []byte) (wait time.Duration, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error("panic in connection handler", "panic", p, "stack", string(debug.Stack()))
			s.stop, ok = ReasonInternalError, false
		}
	}()
	var now instant
	if s.srv.cfg.Rate > 0 {
		now = nowInstant()
		s.bucket.refill(&s.srv.cfg, now)
	}
	s.throttled = false
	n, fed := s.framer.Feed(data, s.handle)
	s.flushForwards()
	if s.offloadNow {
		// The line again, then the rest: offload handles both, in order.
		rest := data[n:]
		s.pending = append(append(make([]byte, 0, len(s.offloadLine)+len(rest)), s.offloadLine...), rest...)
		return 0, s.flushReplies()
	}
	s.pending = append(s.pending[:0], data[n:]...) // data may be s.pending: copy moves
	if !fed && !s.throttled || !s.flushReplies() {
		return 0, false
	}
	if !s.throttled {
		s.pending = dropBig(s.pending)
		return 0, true
	}
	wait, flood := s.bucket.hold(&s.srv.cfg, now)
	if flood {
		s.log().Warn("flood: far above the request rate for long", "rate", s.srv.cfg.Rate, "held_back_for", s.srv.cfg.FloodTimeout)
		s.stop = ReasonFlood
		return 0, false
	}
	s.srv.counters.delayed.Add(1)
	return wait, true
}

// readStopped is called once the reading side is done, with why. The name
// is freed at once; what is queued may still be written (see link.shut).
func (s *session) readStopped(reason CloseReason) {
	s.srv.counters.add(&s.tally)
	if s.claim.Name != "" {
		s.logout()
	}
	if s.held != nil && reason == ReasonClientClosed {
		// Cluster mode: the answers to forwarded SENDs come later; a
		// client that closed only its side still gets them.
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
		s.ended.Store(true)
		s.out.close()
	})
	s.link.shut(reason.drains())
}

// holding is how many bytes of buffer the reading side holds between
// reads: the framer's partial line and the batch's.
func (s *session) holding() int {
	return s.framer.Holding() + cap(s.batch)
}

// release gives back the reading side's big buffers: the connection went
// quiet. Called by the reading side.
func (s *session) release() {
	s.framer.Release()
	s.batch = dropBig(s.batch)
}

// handle answers one line, or one line that was too long (err). It returns
// false when the connection must end, with the reason in s.stop.
func (s *session) handle(line []byte, err error) bool {
	if s.ended.Load() {
		s.stop = ReasonReset // ended elsewhere; that reason stands
		return false
	}
	if hook := s.srv.testHookLine; hook != nil {
		hook(line)
	}
	wasLoggedIn := s.claim.Name != ""
	switch {
	case err == nil:
		err = s.dispatch(line)
	case s.batchTo != nil:
		// A line too long: its reply comes after the batch's.
		err = cmp.Or(s.flushDeliveries(), err)
	}
	if err == errOffload {
		s.offloadLine = append(append(s.offloadLine[:0], line...), '\n')
		s.offloadNow = true
		return false // the rest waits for offload
	}
	if s.srv.trace {
		s.traceIn(line, err, wasLoggedIn)
	}
	if !s.answer(err) {
		return false // the rest of the chunk is not handled
	}
	if s.srv.cfg.Rate > 0 && s.bucket.spend() {
		s.throttled = true
		return false // the rest waits: see bucket
	}
	if len(s.replies) >= flushRepliesBytes {
		return s.flushReplies()
	}
	return true
}

// answer turns a request's outcome into its error reply, or ends the
// session: then it returns false, with the reason in s.stop.
func (s *session) answer(err error) bool {
	switch err := err.(type) {
	case *protocol.Error:
		s.reply(err.Reply)
	case endSession:
		if err == errFenced {
			s.log().Warn("cut off from the cluster: closing the connection")
		}
		s.stop = CloseReason(err)
		return false
	}
	return true
}

// act handles one request of a bot's ("...\n"), as handle does a
// client's line, and queues the replies; it has neither line cap nor flood
// control, because a bot only answers others, who have both. It returns
// false when the session must end, with the reason in s.stop.
func (s *session) act(request []byte) bool {
	line := bytes.TrimSuffix(request, []byte("\n"))
	wasLoggedIn := s.claim.Name != ""
	err := s.dispatch(line)
	s.flushForwards()
	if s.srv.trace {
		s.traceIn(line, err, wasLoggedIn)
	}
	return s.answer(err) && s.flushReplies()
}

// flushForwards sends what this session forwarded since the last call:
// once per read, so a read's SENDs to another server leave together.
func (s *session) flushForwards() {
	if s.forwarded {
		s.forwarded = false
		s.srv.cluster.Flush()
	}
}

// endSession is a request's outcome that ends the session with that
// reason, answering nothing more.
type endSession CloseReason

func (e endSession) Error() string { return "chat: end the session: " + CloseReason(e).String() }

// errFenced ends a session in cluster mode when this server can no longer
// vouch for its claim.
const errFenced = endSession(ReasonFenced)

// errOffload is the outcome of a request that must wait on the cluster
// where the session may not (mayBlock is unset): nothing was done, and
// the request is handled again by offload.
var errOffload = errors.New("chat: the request must wait on the cluster")

// dispatch runs one request, appending its replies, and returns the
// protocol error to answer instead, if any. The checks run in the
// protocol's order: header, login state, body, then the request itself.
func (s *session) dispatch(line []byte) error {
	req, err := protocol.Parse(line)
	if err != nil || req.Command != protocol.CmdSend {
		// Only a SEND may follow the batch's before they are answered
		// (send flushes it for another recipient).
		if err := s.flushDeliveries(); err != nil {
			return err
		}
	}
	loggedIn := s.claim.Name != ""
	switch {
	case req.Command == protocol.CmdUnknown:
		return protocol.ErrBadHeader
	case loggedIn == (req.Command == protocol.CmdHelloFrom):
		// HELLO-FROM is the only request before login, and not allowed after.
		return protocol.ErrBadHeader
	case err != nil:
		if req.Command == protocol.CmdHelloFrom {
			s.badName(line)
		}
		return err
	case loggedIn && !s.srv.lease.Of(s.claim.Epoch):
		// The claim is from before a fence. (Whether the lease is still
		// valid is checked where it matters: a DELIVERY is queued, a
		// forward sent, a claim made.)
		return errFenced
	}
	mustWait := s.srv.cluster != nil && !s.mayBlock // a cluster's login and LIST ask NATS
	switch req.Command {
	case protocol.CmdHelloFrom:
		if mustWait {
			return errOffload
		}
		return s.login(req.Name)
	case protocol.CmdList:
		if mustWait {
			return errOffload
		}
		// A cluster's LIST waits on NATS: the replies before it go out
		// first, so a client that pipelines requests gets each answer as
		// it is made, not after the round trips of the LISTs behind it.
		if s.srv.cluster != nil {
			if err := s.queueReplies(); err != nil {
				return err
			}
		}
		s.list()
	case protocol.CmdSend:
		return s.send(req.Name, req.Message)
	}
	return nil
}

// badName counts and logs a login refused for its name. It is a function
// of its own so that dispatch, which runs for every request, does not
// carry the logging call's stack frame.
func (s *session) badName(line []byte) {
	s.srv.counters.logins[LoginBadName].Add(1)
	_, name, _ := bytes.Cut(line, []byte(" "))
	s.log().Info("login failed", "user", string(name), "reply", protocol.ReplyBadBody.String(), "result", LoginBadName.String(), "why", protocol.ExplainName(name))
}

// login logs the session in as name. The HELLO is queued before anyone can
// see the user (registry.add), so it is the user's first line.
func (s *session) login(name []byte) error {
	claim := Claim{Name: string(name)}
	if c := s.srv.cluster; c != nil {
		var err error
		if claim, err = c.Claim(claim.Name); err != nil {
			s.loginFailed(string(name), err)
			return nil
		}
	}
	var queued pushResult
	err := s.srv.users.add(s, claim.Name, func() error {
		if !s.srv.lease.Holds(claim.Epoch) {
			// The claim was made under a lease that ended meanwhile;
			// EvictAll may have run without this session.
			return ErrFull
		}
		if !s.srv.reserveUser(s) {
			return errIPFull
		}
		s.srv.counters.users.Add(1) // counted before anyone can see the HELLO
		s.srv.counters.logins[LoginOK].Add(1)
		s.replies = protocol.AppendHello(s.replies, claim.Name)
		queued = s.out.push(s.replies, nil)
		s.replies = s.replies[:0]
		if queued != pushed {
			s.srv.counters.users.Add(-1)
			s.srv.counters.logins[LoginOK].Add(^uint64(0))
			s.srv.releaseUser(s)
			return errNotQueued
		}
		s.claim = claim // before others can look the session up
		return nil
	})
	if err != nil {
		if c := s.srv.cluster; c != nil && claim.Seq != 0 {
			c.Release(claim)
		}
		switch {
		case err != errNotQueued:
			s.loginFailed(claim.Name, err)
		case queued == overflow:
			s.log().Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
			return endSession(ReasonSlowConsumer)
		default:
			return endSession(ReasonReset) // ended elsewhere; that reason stands
		}
		return nil
	}
	s.link.wake()
	s.framer.SetMaxLine(s.srv.cfg.MaxLineBytes)
	s.tally.replies[protocol.ReplyHello]++
	s.link.loggedIn() // no idle timeout once logged in
	s.log().Info("login", "user", claim.Name)
	return nil
}

var (
	// errNotQueued is a login's outcome when its HELLO could not be queued.
	errNotQueued = errors.New("chat: login reply not queued")
	// errIPFull is a login's outcome when MaxUsersPerIP users of its
	// network are logged in: BUSY, as for the server's own limit.
	errIPFull = errors.New("chat: no room for another user of this network")
)

// loginFailed answers a refused login, and logs it: a person whose
// client cannot log in wants to see why in the server's log.
func (s *session) loginFailed(name string, err error) {
	result, reply := loginOutcome(err)
	s.srv.counters.logins[result].Add(1)
	s.reply(reply)
	s.log().Info("login failed", "user", name, "reply", reply.String(), "result", result.String())
}

// logout frees the session's name. The reading side calls it as soon as
// it stops, so the name is free again with no delay. Local senders stop
// reaching the session before the claim is released.
func (s *session) logout() {
	s.srv.users.remove(s, s.claim.Name)
	s.out.stopDeliveries()
	if c := s.srv.cluster; c != nil {
		c.Release(s.claim)
	}
	s.srv.releaseUser(s)
	s.srv.counters.users.Add(-1)
	s.log().Info("logout", "user", s.claim.Name)
}

// list answers LIST.
func (s *session) list() {
	var names []string
	if c := s.srv.cluster; c == nil {
		names = s.srv.users.names(nil)
	} else if all, err := c.List(nil); err == nil {
		names = all
	} else {
		// The cluster could not be read in time; the protocol has no
		// error reply for LIST, so answer with what this server holds.
		s.log().Warn("list failed; answering with this server's users", "err", err)
		names = s.srv.users.names(nil)
	}
	s.replies = protocol.AppendListOK(s.replies, names)
	s.tally.replies[protocol.ReplyListOK]++
}

// loginOutcome is the one place a failed login becomes a wire reply.
func loginOutcome(err error) (LoginResult, protocol.ReplyKind) {
	switch {
	case errors.Is(err, ErrInUse):
		return LoginInUse, protocol.ReplyInUse
	case errors.Is(err, errIPFull):
		return LoginIPLimit, protocol.ReplyBusy
	}
	return LoginBusy, protocol.ReplyBusy
}

// send queues a DELIVERY on the recipient, then a SEND-OK for the sender.
// It never waits on the recipient's socket: a recipient whose queue is
// full is ended as a slow consumer and the sender told BAD-DEST-USER. In
// cluster mode a recipient not on this server is forwarded to.
func (s *session) send(toName, message []byte) error {
	to := s.recipient(toName)
	if to != s.batchTo {
		// The batch's replies come first.
		if err := s.flushDeliveries(); err != nil {
			return err
		}
	}
	switch {
	case to == nil && s.srv.cluster != nil:
		return s.forward(toName, message) // not on this server: maybe on another
	case to == nil:
		s.reply(protocol.ReplyBadDestUser)
	case to == s:
		// Our own replies are queued in order, so the DELIVERY goes with them.
		s.replies = protocol.AppendDelivery(s.replies, s.claim.Name, message)
		return s.answerSends(s, pushed, 1)
	case to.transport == TransportBot:
		return s.sendToBot(to, message)
	default:
		return s.gather(to, message)
	}
	return nil
}

// recipient returns the session logged in on this server as name, or nil.
// Clients mostly send to the same user many times in a row, and
// remembering the last one skips the registry's lock and hash on the hot
// path. A remembered session is right until its user logs out; then it
// takes no more deliveries, and recipient asks the registry again.
func (s *session) recipient(name []byte) *session {
	if s.lastTo != nil && s.lastToName == string(name) && s.lastTo.out.takesDeliveries() {
		return s.lastTo
	}
	s.lastTo = s.srv.users.lookup(name)
	if s.lastTo != nil && s.lastToName != string(name) {
		s.lastToName = string(name) // once per new recipient
	}
	return s.lastTo
}

// gather adds a DELIVERY for to to the batch (see batchTo), which send
// has emptied if it was for someone else.
func (s *session) gather(to *session, message []byte) error {
	s.batchTo = to
	s.batch = protocol.AppendDelivery(s.batch, s.claim.Name, message)
	s.batchSends++
	if len(s.batch) >= flushRepliesBytes {
		return s.flushDeliveries()
	}
	return nil
}

// flushDeliveries queues the batch on its recipient, then answers its
// SENDs: SEND-OK if it was queued, BAD-DEST-USER if not. A session ended
// meanwhile (evicted: its name may be someone else's now) queues nothing.
func (s *session) flushDeliveries() error {
	to, sends := s.batchTo, s.batchSends
	if to == nil {
		return nil
	}
	s.batchTo, s.batchSends = nil, 0
	if s.ended.Load() {
		s.batch = s.batch[:0]
		return endSession(ReasonReset) // ended elsewhere; that reason stands
	}
	var res pushResult
	res, s.batch = to.out.handOver(s.batch, s.srv.lease) // kept while busy: see release
	if res == pushed {
		to.link.wake()
	}
	return s.answerSends(to, res, sends)
}

// sendToBot queues a DELIVERY on a bot, which answers once the SEND-OK is
// queued: SEND-OK, then the bot's DELIVERY, as a client of the protocol
// expects.
func (s *session) sendToBot(bot *session, message []byte) error {
	res := pushDelivery(bot.out, s.claim.Name, message, s.srv.lease)
	if err := s.answerSends(bot, res, 1); err != nil {
		return err
	}
	if res == pushed {
		if err := s.queueReplies(); err != nil {
			return err
		}
		bot.link.wake()
	}
	return nil
}

// answerSends answers n SENDs whose DELIVERYs to to had outcome res.
func (s *session) answerSends(to *session, res pushResult, n int) error {
	reply := protocol.ReplySendOK
	switch res {
	case pushed:
		s.tally.replies[protocol.ReplyDelivery] += uint32(n)
		s.tally.delivered += uint32(n)
	case unvouched:
		return errFenced
	case overflow:
		to.log().Warn("slow consumer: outbound queue full", "limit", s.srv.cfg.MaxPendingBytes)
		to.end(ReasonSlowConsumer)
		fallthrough
	default:
		reply = protocol.ReplyBadDestUser
	}
	for range n {
		s.reply(reply)
	}
	return nil
}

// reply appends a reply without a body and counts it.
func (s *session) reply(k protocol.ReplyKind) {
	s.replies = protocol.AppendReply(s.replies, k)
	s.tally.replies[k]++
}

// flushReplies queues the replies gathered so far on our own connection.
// It returns false, with the reason in s.stop, if the session must end.
func (s *session) flushReplies() bool {
	return s.answer(s.queueReplies())
}

// queueReplies is flushReplies for a request's handler: it returns the
// endSession outcome that ends the session, if it must end, for the
// caller to answer.
func (s *session) queueReplies() error {
	if err := s.flushDeliveries(); err != nil {
		return err
	}
	s.srv.counters.add(&s.tally)
	if len(s.replies) == 0 {
		return nil
	}
	var res pushResult
	if s.held == nil {
		res = s.out.push(s.replies, nil)
	} else {
		res = s.held.push(s, s.replies)
	}
	s.replies = dropBig(s.replies[:0])
	switch res {
	case pushed:
		s.link.wake()
	case overflow:
		s.log().Warn("slow consumer: client does not read its replies", "limit", s.srv.cfg.MaxPendingBytes)
		return endSession(ReasonSlowConsumer)
	case unvouched:
		return errFenced
	case ending:
		// Ended elsewhere; end already holds the real reason and will
		// ignore this one.
		return endSession(ReasonReset)
	}
	return nil
}
