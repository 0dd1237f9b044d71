package tcp

import (
	"net"
	"sync"
)

// gatherConn sits under the TLS layer and gathers the records of one Post
// into as few system calls as it can: small records are copied into a
// buffer, a large one (write data encrypted straight from the region) is
// sent with the buffer in one writev, uncopied. Before the handshake is
// done (gather off) it passes writes through.
type gatherConn struct {
	*net.TCPConn
	mu     sync.Mutex // the TLS layer also writes from its read path
	gather bool
	buf    []byte
}

// bigRecord is the size from which a record is not copied.
const bigRecord = 8 << 10

func (g *gatherConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.gather {
		return g.TCPConn.Write(p)
	}
	if len(p) < bigRecord && len(g.buf)+len(p) <= cap(g.buf) {
		g.buf = append(g.buf, p...)
		return len(p), nil
	}
	bufs := net.Buffers{g.buf, p}
	_, err := bufs.WriteTo(g.TCPConn)
	g.buf = g.buf[:0]
	return len(p), err
}

// Flush sends what is gathered.
func (g *gatherConn) Flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.buf) == 0 {
		return nil
	}
	_, err := g.TCPConn.Write(g.buf)
	g.buf = g.buf[:0]
	return err
}

// startGather turns gathering on, once the handshake is over.
func (g *gatherConn) startGather() {
	g.mu.Lock()
	g.gather, g.buf = true, make([]byte, 0, 64<<10)
	g.mu.Unlock()
}
