//go:build !linux

package chat

import (
	"errors"
	"net"
)

// haveEventLoops says Serve can use event loops for plain TCP here: they
// use epoll, which only Linux has.
const haveEventLoops = false

// servePolled is never called here, as haveEventLoops is false.
func (srv *Server) servePolled(*net.TCPListener) error {
	return errors.ErrUnsupported
}
