package chat

// SetTestHookLine sets a hook that the server calls with every line before
// it handles it, so that tests outside the package can inject faults. Set
// it before Serve.
func (srv *Server) SetTestHookLine(hook func(line []byte)) {
	srv.testHookLine = hook
}

// SetTestHookWatch sets a hook that the event loops call after adding a
// new connection to their epoll set; an error it returns is taken for a
// failed add. Set it before Serve.
func (srv *Server) SetTestHookWatch(hook func() error) {
	srv.testHookWatch = hook
}

// HaveEventLoops says whether plain TCP is served by event loops here.
const HaveEventLoops = haveEventLoops

// EndSessions ends every session, as Shutdown begins to, and returns
// without waiting for them.
func (srv *Server) EndSessions() {
	_, sessions := srv.beginClosing()
	for _, s := range sessions {
		s.end(ReasonServerShutdown)
	}
}
