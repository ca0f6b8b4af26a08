package chat

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"chatserver/internal/protocol"
)

// Built-in users (Config.Bots), as the course's test server has them, for
// people who write clients:
//
//   - echobot sends every message straight back.
//   - delaybot sends every message back twice, and the two DELIVERY lines
//     reach the client in pieces over a second (pacer), so that a client
//     that takes one read for one line fails visibly.
//
// A bot is a user like any other: its session logs in, counts against
// MaxUsers, is listed, and sends its answers with SEND, through the same
// code as a client's requests (in cluster mode, to users of other servers
// too). Only its link differs: no socket, a goroutine that reads what the
// server queues for the bot and answers it.

// The built-in users' names.
const (
	EchoBot  = "echobot"
	DelayBot = "delaybot"
)

const (
	// BotRetry is how long a bot that could not log in waits before it
	// tries again: its name is held by a user, or by the bot of another
	// server of the cluster (which it takes over once that one is gone),
	// or the server is full.
	BotRetry = 10 * time.Second
	// pieceEvery is the pause between the pieces of delaybot's answers.
	pieceEvery = 500 * time.Millisecond
	// maxPacedPerUser bounds delaybot's answers waiting to be written in
	// pieces to one user; answers beyond it are written whole.
	maxPacedPerUser = 64
)

func isBot(name []byte) bool {
	return string(name) == EchoBot || string(name) == DelayBot
}

// startBots logs the bots in, so that they are the first users, and keeps
// each logged in until the server closes.
func (srv *Server) startBots() {
	srv.pacer = &pacer{srv: srv, queued: make(map[*session][][]byte)}
	for _, b := range []struct {
		name   string
		answer botAnswer
	}{{EchoBot, echo}, {DelayBot, delay}} {
		l, ok := srv.newBot(b.name, b.answer)
		if !ok {
			return
		}
		srv.wg.Add(1)
		go srv.keepBot(l)
	}
}

// botAnswer answers one message to a bot, as bot's session; it returns
// false when the session must end, with the reason in bot.stop.
type botAnswer func(bot *session, from, msg []byte) bool

// newBot starts a session for the bot name and logs it in; false means
// the server is closing.
func (srv *Server) newBot(name string, answer botAnswer) (*botLink, bool) {
	s := srv.newSession(netip.AddrPort{}) // no address: no per-IP limit counts it
	s.transport = TransportBot
	l := &botLink{sess: s, name: name, answer: answer, wakeup: make(chan struct{}, 1), stopped: make(chan struct{})}
	s.link = l
	s.mayBlock = true // its goroutine is the bot's own
	if _, ok := srv.admit(s); !ok {
		return nil, false
	}
	if !s.act(protocol.AppendHelloFrom(nil, name)) {
		s.end(s.stop)
	}
	return l, true
}

// keepBot runs the bot's session, and a new one BotRetry after each ends,
// until the server closes.
func (srv *Server) keepBot(l *botLink) {
	defer srv.wg.Done()
	for {
		l.run()
		select {
		case <-srv.done:
			return
		case <-time.After(BotRetry):
		}
		var ok bool
		if l, ok = srv.newBot(l.name, l.answer); !ok {
			return
		}
	}
}

// botLink carries a bot's session. Its goroutine (run) is the session's
// reading side.
type botLink struct {
	sess     *session
	name     string
	answer   botAnswer
	wakeup   chan struct{} // holds a token while there may be bytes queued for the bot
	stopped  chan struct{} // closed by the first shut
	shutOnce sync.Once
}

func (l *botLink) wake() {
	select {
	case l.wakeup <- struct{}{}:
	default:
	}
}

func (l *botLink) shut(bool) { l.shutOnce.Do(func() { close(l.stopped) }) }

func (l *botLink) loggedIn() {}

// run reads what the server queues for the bot, its replies and the
// messages it gets, and answers the messages, until the session ends.
func (l *botLink) run() {
	s := l.sess
	reason := ReasonServerShutdown // the reason given to end stands
	var batch []byte
	for reading := true; reading; {
		select {
		case <-l.stopped:
			reading = false
			continue
		case <-l.wakeup:
		}
		for reading {
			var closed bool
			batch, closed = s.takeOut(batch)
			if len(batch) == 0 {
				reading = !closed
				break
			}
			for line := range bytes.Lines(batch) {
				if !l.handle(bytes.TrimSuffix(line, []byte("\n"))) {
					reason, reading = s.stop, false
					break
				}
			}
		}
	}
	s.readStopped(reason)
	s.closed()
}

// handle reads one line the server wrote to the bot.
func (l *botLink) handle(line []byte) bool {
	s := l.sess
	switch {
	case bytes.HasPrefix(line, []byte("DELIVERY ")):
		from, msg, _ := bytes.Cut(line[len("DELIVERY "):], []byte(" "))
		if isBot(from) {
			return true // bots do not talk to each other
		}
		return l.answer(s, from, msg)
	case string(line) == "IN-USE" || string(line) == "BUSY":
		s.log().Info("bot could not log in; trying again later", "user", l.name, "reply", string(line), "retry_in", BotRetry)
		s.stop = ReasonClientClosed
		return false
	}
	return true // HELLO, and the replies to its SENDs
}

// echo sends msg back to its sender.
func echo(bot *session, from, msg []byte) bool {
	return bot.act(protocol.AppendSend(nil, from, msg))
}

// delay sends msg back to its sender twice, in pieces when the sender is
// a user of this server. (To another server of the cluster a line goes
// whole, so there it arrives whole.)
func delay(bot *session, from, msg []byte) bool {
	to := bot.srv.users.lookup(from)
	if to == nil {
		send := protocol.AppendSend(nil, from, msg)
		return bot.act(send) && bot.act(send)
	}
	line := protocol.AppendDelivery(nil, DelayBot, msg)
	bot.srv.pacer.add(to, append(line, line...))
	return true
}

// pacer writes delaybot's answers to users of this server in pieces, one
// answer after the other for each user: an answer of two lines of n bytes
// is written as n/2 bytes at once, n more pieceEvery later (the end of
// the first line and the start of the second, in one piece), and the rest
// pieceEvery after that.
type pacer struct {
	srv    *Server
	mu     sync.Mutex
	queued map[*session][][]byte // guarded by mu: answers waiting for each user, the first being written
}

// add queues answer for to.
func (p *pacer) add(to *session, answer []byte) {
	p.mu.Lock()
	q := p.queued[to]
	if len(q) >= maxPacedPerUser {
		p.mu.Unlock()
		p.push(to, answer, len(answer))
		return
	}
	p.queued[to] = append(q, answer)
	p.mu.Unlock()
	if len(q) == 0 {
		p.write(to, answer)
	}
}

// write writes answer to to in its pieces, then the next answer queued.
func (p *pacer) write(to *session, answer []byte) {
	half := len(answer) / 4 // half of one line
	if !p.push(to, answer, half) {
		p.next(to)
		return
	}
	cuts := []int{half, len(answer)/2 + half, len(answer)}
	step := 1
	var piece func()
	piece = func() {
		complete := to.out.advancePaced(cuts[step] - cuts[step-1])
		to.link.wake()
		if step++; complete || step == len(cuts) {
			p.next(to)
			return
		}
		time.AfterFunc(pieceEvery, piece)
	}
	time.AfterFunc(pieceEvery, piece)
}

// push queues answer on to, first bytes of it at once, and reports
// whether it did.
func (p *pacer) push(to *session, answer []byte, first int) bool {
	switch to.out.pushPaced(answer, first, p.srv.lease) {
	case pushed:
		to.link.wake()
		p.srv.counters.replies[protocol.ReplyDelivery].Add(2)
		p.srv.counters.delivered.Add(2)
		return true
	case overflow:
		to.log().Warn("slow consumer: outbound queue full", "limit", p.srv.cfg.MaxPendingBytes)
		to.end(ReasonSlowConsumer)
	}
	return false
}

// next starts the answer queued for to after the one just written.
func (p *pacer) next(to *session) {
	p.mu.Lock()
	q := p.queued[to][1:]
	if len(q) == 0 {
		delete(p.queued, to)
	} else {
		p.queued[to] = q
	}
	p.mu.Unlock()
	if len(q) > 0 {
		p.write(to, q[0])
	}
}
