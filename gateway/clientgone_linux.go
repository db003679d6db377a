package gateway

import (
	"errors"
	"net"
	"syscall"
)

// rawConn is the socket under conn (a TLS connection's too).
func rawConn(conn net.Conn) syscall.RawConn {
	if c, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = c.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// closedCheck returns a function that reports whether the peer of conn
// closed it or the connection broke (nil when conn has no socket to look
// at): a peek without waiting that finds the end of the stream or an error
// other than "nothing to read yet". Bytes waiting (a pipelined request)
// mean the client is there. The peek goes through Control, not Read: the
// server's read deadline, which has passed when a request runs longer than
// the read timeout, says nothing about the client.
func closedCheck(conn net.Conn) func() bool {
	rc := rawConn(conn)
	if rc == nil {
		return nil
	}
	return func() bool { return peerClosed(rc) }
}

func peerClosed(rc syscall.RawConn) bool {
	var buf [1]byte
	closed := false
	rc.Control(func(fd uintptr) { // an error: the server closed it; not the client's doing
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			closed = true
		}
	})
	return closed
}
