package tcp

import (
	"bufio"
	"net"
	"sync"
)

// gatherConn sits under the TLS layer and makes its system calls large:
// it copies the encrypted records of one Post (TLS makes records of at
// most 16 KiB, from a buffer it reuses) into one buffer of gatherLen and
// writes that with one write(2) when it is full or the Post ends; and it
// reads the socket through a buffer of readBuf, which the TLS layer then
// takes its records from. Over veth or a NIC, a system call and a packet
// per 16 KiB record cost both sides more than the copy (about a third of
// the link's throughput with 100 KB messages, measured with shimmy-bench
// --remote). Before the handshake is done (gather off) it passes reads
// and writes through.
type gatherConn struct {
	*net.TCPConn
	mu     sync.Mutex // the TLS layer also writes from its read path
	gather bool
	buf    []byte
	rd     *bufio.Reader // set once, before the reader starts
}

// gatherLen is the most a write gathers.
const gatherLen = 256 << 10

func (g *gatherConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.gather {
		return g.TCPConn.Write(p)
	}
	if len(g.buf)+len(p) > cap(g.buf) {
		if err := g.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > cap(g.buf) {
		return g.TCPConn.Write(p)
	}
	g.buf = append(g.buf, p...)
	return len(p), nil
}

// Read reads through the read buffer once gathering is on.
func (g *gatherConn) Read(p []byte) (int, error) {
	if g.rd != nil {
		return g.rd.Read(p)
	}
	return g.TCPConn.Read(p)
}

// Flush sends what is gathered.
func (g *gatherConn) Flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.flushLocked()
}

func (g *gatherConn) flushLocked() error {
	if len(g.buf) == 0 {
		return nil
	}
	_, err := g.TCPConn.Write(g.buf)
	g.buf = g.buf[:0]
	return err
}

// startGather turns gathering on, once the handshake is over and before
// the link's reader starts.
func (g *gatherConn) startGather() {
	g.mu.Lock()
	g.gather, g.buf = true, make([]byte, 0, gatherLen)
	g.rd = bufio.NewReaderSize(g.TCPConn, readBuf)
	g.mu.Unlock()
}
