package chat

// SetTestHookLine sets a hook that the server calls with every line before
// it handles it, so that tests outside the package can inject faults. Set
// it before Serve.
func (srv *Server) SetTestHookLine(hook func(line []byte)) {
	srv.testHookLine = hook
}
