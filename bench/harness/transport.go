package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/shimmy-dev/shimmy/chanfile"
	"github.com/shimmy-dev/shimmy/channel"
	"github.com/shimmy-dev/shimmy/shm"
)

// pubConn is the publishing side of one system, in a child process.
type pubConn interface {
	// Buf returns the buffer to fill for the next message (Size bytes).
	// fresh says its contents are arbitrary (a claimed ring frame), so the
	// whole payload must be encoded, not only stamped. ahead (at least 1)
	// is how many messages the publisher will send, this one included,
	// before it flushes or waits: a client that batches may reserve room
	// for that many at once, as long as each message goes out with Send.
	Buf(ctx context.Context, ahead int) (buf []byte, fresh bool, err error)
	// Send publishes the buffer Buf returned.
	Send(ctx context.Context) error
	// Flush pushes out messages the client batches (sockets, pipelines);
	// the publisher calls it after every message at a fixed rate and
	// before it waits for slow subscribers.
	Flush(ctx context.Context) error
	// Close flushes everything and makes sure the server has it.
	Close() error
}

// subConn is the subscribing side of one system, in a child process.
type subConn interface {
	// Recv returns the next message, valid until the next Recv.
	Recv(ctx context.Context) ([]byte, error)
	Close() error
}

// dialer opens the two sides of a system; spec.Addr says where.
type dialer struct {
	pub func(ctx context.Context, s childSpec) (pubConn, string, error) // returns an address for subscribers, if the publisher serves
	sub func(ctx context.Context, s childSpec) (subConn, error)
	// subProcs is GOMAXPROCS in a subscriber's process (0: the runtime's
	// default).
	subProcs int
}

var dialers = map[string]dialer{
	SysShimmyCopy:     {pub: ringPub(false, shmRing), sub: ringSub(false, channel.IdleDefault, shmRing)},
	SysShimmyZeroCopy: {pub: ringPub(true, shmRing), sub: ringSub(true, channel.IdleDefault, shmRing)},
	// A busy subscriber in the mode channel.IdleBusy recommends for the
	// steadiest tail: a process of its own with one Go processor, so
	// that its yields wake no other thread (a C peer's busy subscriber is
	// one thread too).
	SysShimmyBusy:  {pub: ringPub(true, shmRing), sub: ringSub(true, channel.IdleBusy, shmRing), subProcs: 1},
	SysShimmyFiles: {pub: filePub, sub: fileSub},
	SysUnix:        {pub: sockPub("unix"), sub: sockSub("unix")},
	SysTCP:         {pub: sockPub("tcp"), sub: sockSub("tcp")},
	SysMosquitto:   {pub: mqttPub, sub: mqttSub},
	SysNATS:        {pub: natsPub, sub: natsSub},
	SysRedis:       {pub: redisPub, sub: redisSub},
	// The remote cases: a channel's ring mapped through each host's
	// agent mount; the same clients as the local ones.
	SysMirror:          {pub: ringPub(true, fileRing), sub: ringSub(true, channel.IdleDefault, fileRing)},
	SysRemoteTCP:       {pub: sockPub("tcp"), sub: sockSub("tcp")},
	SysRemoteNATS:      {pub: natsPub, sub: natsSub},
	SysRemoteMosquitto: {pub: mqttPub, sub: mqttSub},
}

// --- Shimmy through mmap: the ring in a POSIX shm object ---

type ringPubConn struct {
	ring  *channel.Ring
	unmap func() error
	p     *channel.Publisher
	zc    bool
	n     int
	buf   []byte // the copying path's message
	batch channel.Batch
	next  int   // frame of batch to fill next
	sizes []int // maxBatch times n: a batch's sizes are a prefix
}

// maxBatch bounds a zero-copy publisher's batch: enough to amortise a
// claim over many small messages, few enough that the first of them does
// not wait long for the last.
const maxBatch = 64

// ringOpener maps the ring at a path; the func it returns unmaps it,
// after the ring's Close. exclusive says the case's publisher is the
// ring's only one.
type ringOpener func(path string) (r *channel.Ring, unmap func() error, exclusive bool, err error)

// shmRing opens a POSIX shm object the harness made: the publisher is
// alone on it.
func shmRing(path string) (*channel.Ring, func() error, bool, error) {
	seg, err := shm.OpenPOSIX(path, 0)
	if err != nil {
		return nil, nil, false, err
	}
	r, err := channel.Open(seg.Bytes())
	if err != nil {
		seg.Close()
		return nil, nil, false, err
	}
	return r, seg.Close, true, nil
}

// fileRing maps a channel's ring file through an agent's mount, where the
// mirror's importer is a publisher too (so not exclusive). Close unmaps.
func fileRing(path string) (*channel.Ring, func() error, bool, error) {
	r, err := channel.MapFile(path)
	return r, func() error { return nil }, false, err
}

func ringPub(zc bool, open ringOpener) func(context.Context, childSpec) (pubConn, string, error) {
	return func(ctx context.Context, s childSpec) (pubConn, string, error) {
		r, unmap, exclusive, err := open(s.Addr)
		if err != nil {
			return nil, "", err
		}
		// One publisher per case: the exclusive path (no CAS per message)
		// where it is alone.
		p, err := r.NewPublisher(channel.PublisherOptions{Idle: channel.IdleDefault, Exclusive: exclusive})
		if err != nil {
			r.Close()
			unmap()
			return nil, "", err
		}
		c := &ringPubConn{ring: r, unmap: unmap, p: p, zc: zc, n: s.Size}
		if !zc {
			c.buf = make([]byte, s.Size)
		}
		for range maxBatch {
			c.sizes = append(c.sizes, s.Size)
		}
		return c, "", nil
	}
}

// Buf: the zero-copy publisher claims frames for up to ahead messages at
// once (ClaimBatch) and hands them out one by one; the copying publisher
// reuses one buffer and publishes each message on its own.
func (c *ringPubConn) Buf(ctx context.Context, ahead int) ([]byte, bool, error) {
	if !c.zc {
		return c.buf, false, nil
	}
	if c.next == c.batch.Len() {
		b, err := c.p.ClaimBatch(ctx, c.sizes[:min(max(ahead, 1), maxBatch)])
		if err != nil {
			return nil, false, err
		}
		c.batch, c.next = b, 0
	}
	return c.batch.Buf(c.next), true, nil
}

// Send commits the batch once its last frame is filled: the publisher
// never asks for more messages ahead than it sends, so none waits for a
// Flush.
func (c *ringPubConn) Send(ctx context.Context) error {
	if !c.zc {
		return c.p.Publish(ctx, c.buf)
	}
	c.next++
	if c.next < c.batch.Len() {
		return nil
	}
	return c.p.CommitBatch(c.batch)
}

func (c *ringPubConn) Flush(context.Context) error { return nil }

func (c *ringPubConn) Close() error {
	c.p.Close()
	c.ring.Close()
	return c.unmap()
}

type ringSubConn struct {
	ring   *channel.Ring
	unmap  func() error
	s      *channel.Subscriber
	zc     bool
	viewed bool
	buf    []byte
}

func ringSub(zc bool, idle channel.Idle, open ringOpener) func(context.Context, childSpec) (subConn, error) {
	return func(ctx context.Context, s childSpec) (subConn, error) {
		r, unmap, _, err := open(s.Addr)
		if err != nil {
			return nil, err
		}
		sub, err := r.NewSubscriber(channel.SubscriberOptions{Idle: idle})
		if err != nil {
			r.Close()
			unmap()
			return nil, err
		}
		return &ringSubConn{ring: r, unmap: unmap, s: sub, zc: zc, buf: make([]byte, 0, s.Size)}, nil
	}
}

func (c *ringSubConn) Recv(ctx context.Context) ([]byte, error) {
	if !c.zc {
		var err error
		c.buf, err = c.s.Next(ctx, c.buf)
		return c.buf, err
	}
	if c.viewed {
		c.s.Done()
		c.viewed = false
	}
	msg, err := c.s.Peek(ctx)
	c.viewed = err == nil
	return msg, err
}

func (c *ringSubConn) Close() error {
	if c.viewed {
		c.s.Done()
	}
	c.s.Close()
	c.ring.Close()
	return c.unmap()
}

// --- Shimmy through the data files of a mounted agent ---

type filePubConn struct {
	f   *os.File
	buf []byte
}

func filePub(ctx context.Context, s childSpec) (pubConn, string, error) {
	f, err := os.OpenFile(filepath.Join(s.Addr, chanfile.Pub), os.O_WRONLY, 0)
	if err != nil {
		return nil, "", err
	}
	return &filePubConn{f: f, buf: make([]byte, s.Size)}, "", nil
}

func (c *filePubConn) Buf(context.Context, int) ([]byte, bool, error) { return c.buf, false, nil }

func (c *filePubConn) Send(context.Context) error {
	n, err := c.f.Write(c.buf)
	if err == nil && n != len(c.buf) {
		err = io.ErrShortWrite
	}
	return err
}

func (c *filePubConn) Flush(context.Context) error { return nil }
func (c *filePubConn) Close() error                { return c.f.Close() }

type fileSubConn struct {
	f   *os.File
	buf []byte
}

func fileSub(ctx context.Context, s childSpec) (subConn, error) {
	f, err := os.Open(filepath.Join(s.Addr, chanfile.Msg))
	if err != nil {
		return nil, err
	}
	// Room for any message the channel allows: msg returns one per read.
	return &fileSubConn{f: f, buf: make([]byte, max(s.Size, 128<<10))}, nil
}

func (c *fileSubConn) Recv(context.Context) ([]byte, error) {
	n, err := c.f.Read(c.buf)
	return c.buf[:n], err
}

func (c *fileSubConn) Close() error { return c.f.Close() }

// --- Kernel baselines: a Unix domain socket and TCP over loopback ---
// The publisher listens and writes every message, length-prefixed, to each
// subscriber's connection: what a pub/sub without a broker does.

type sockPubConn struct {
	ln    net.Listener
	n     int
	conns []net.Conn
	ws    []*bufio.Writer
	buf   []byte
	hdr   [4]byte
}

func sockPub(network string) func(context.Context, childSpec) (pubConn, string, error) {
	return func(ctx context.Context, s childSpec) (pubConn, string, error) {
		addr := s.Addr
		if network == "tcp" && addr == "" {
			addr = "127.0.0.1:0" // loopback; the remote case gives its host's address
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, "", err
		}
		return &sockPubConn{ln: ln, n: s.Subs, buf: make([]byte, s.Size)}, ln.Addr().String(), nil
	}
}

// accept takes the subscribers' connections, on the first message: they
// connect after the publisher announced its address.
func (c *sockPubConn) accept() error {
	if len(c.conns) == c.n {
		return nil
	}
	if d, ok := c.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(10 * time.Second))
	}
	for len(c.conns) < c.n {
		conn, err := c.ln.Accept()
		if err != nil {
			return fmt.Errorf("accept subscriber %d of %d: %w", len(c.conns)+1, c.n, err)
		}
		c.conns = append(c.conns, conn)
		c.ws = append(c.ws, bufio.NewWriterSize(conn, 256<<10))
	}
	return nil
}

func (c *sockPubConn) Buf(context.Context, int) ([]byte, bool, error) {
	return c.buf, false, c.accept()
}

func (c *sockPubConn) Send(context.Context) error {
	binary.LittleEndian.PutUint32(c.hdr[:], uint32(len(c.buf)))
	for _, w := range c.ws {
		w.Write(c.hdr[:])
		if _, err := w.Write(c.buf); err != nil {
			return err
		}
	}
	return nil
}

func (c *sockPubConn) Flush(context.Context) error {
	for _, w := range c.ws {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (c *sockPubConn) Close() error {
	err := c.Flush(context.Background())
	for _, conn := range c.conns {
		conn.Close()
	}
	c.ln.Close()
	return err
}

type sockSubConn struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
	stop func() bool
}

func sockSub(network string) func(context.Context, childSpec) (subConn, error) {
	return func(ctx context.Context, s childSpec) (subConn, error) {
		conn, err := net.Dial(network, s.Addr)
		if err != nil {
			return nil, err
		}
		// Cancelling the run unblocks a pending read.
		stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
		return &sockSubConn{conn: conn, r: bufio.NewReaderSize(conn, 256<<10), buf: make([]byte, s.Size), stop: stop}, nil
	}
}

func (c *sockSubConn) Recv(context.Context) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr[:]))
	if n > 64<<20 {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrCorrupt, n)
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	_, err := io.ReadFull(c.r, c.buf)
	return c.buf, err
}

func (c *sockSubConn) Close() error { c.stop(); return c.conn.Close() }

// --- Mosquitto: MQTT QoS 0 with the Eclipse Paho client ---

func mqttClient(ctx context.Context, s childSpec, id string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + s.Addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetKeepAlive(0).SetCleanSession(true).SetWriteTimeout(0)
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("mqtt connect %s: %v", s.Addr, t.Error())
	}
	return c, nil
}

type mqttPubConn struct {
	c     mqtt.Client
	topic string
	buf   []byte
	last  mqtt.Token
}

func mqttPub(ctx context.Context, s childSpec) (pubConn, string, error) {
	c, err := mqttClient(ctx, s, fmt.Sprintf("bench-pub-%d", os.Getpid()))
	if err != nil {
		return nil, "", err
	}
	return &mqttPubConn{c: c, topic: s.Topic, buf: make([]byte, s.Size)}, "", nil
}

func (c *mqttPubConn) Buf(context.Context, int) ([]byte, bool, error) { return c.buf, false, nil }

func (c *mqttPubConn) Send(context.Context) error {
	// Paho keeps the slice until the packet is written: hand it a copy.
	c.last = c.c.Publish(c.topic, 0, false, append([]byte(nil), c.buf...))
	return nil
}

func (c *mqttPubConn) Flush(context.Context) error {
	if c.last == nil {
		return nil
	}
	c.last.Wait()
	return c.last.Error()
}

func (c *mqttPubConn) Close() error {
	err := c.Flush(context.Background())
	c.c.Disconnect(1000)
	return err
}

type mqttSubConn struct {
	c  mqtt.Client
	ch chan []byte
}

func mqttSub(ctx context.Context, s childSpec) (subConn, error) {
	c, err := mqttClient(ctx, s, fmt.Sprintf("bench-sub-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	sc := &mqttSubConn{c: c, ch: make(chan []byte, 1<<16)}
	// With ordered delivery the handler runs on Paho's reader path: a full
	// channel holds the connection back (TCP flow control) instead of
	// dropping messages.
	t := c.Subscribe(s.Topic, 0, func(_ mqtt.Client, m mqtt.Message) { sc.ch <- m.Payload() })
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt subscribe: %v", t.Error())
	}
	return sc, nil
}

func (c *mqttSubConn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case m := <-c.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *mqttSubConn) Close() error { c.c.Disconnect(0); return nil }

// --- NATS core pub/sub with nats.go ---

type natsPubConn struct {
	nc    *nats.Conn
	topic string
	buf   []byte
}

func natsConnect(s childSpec) (*nats.Conn, error) {
	return nats.Connect("nats://"+s.Addr, nats.NoReconnect(), nats.Timeout(10*time.Second))
}

func natsPub(ctx context.Context, s childSpec) (pubConn, string, error) {
	nc, err := natsConnect(s)
	if err != nil {
		return nil, "", err
	}
	return &natsPubConn{nc: nc, topic: s.Topic, buf: make([]byte, s.Size)}, "", nil
}

func (c *natsPubConn) Buf(context.Context, int) ([]byte, bool, error) { return c.buf, false, nil }

// Send: nats.go copies the message into its write buffer at once.
func (c *natsPubConn) Send(context.Context) error { return c.nc.Publish(c.topic, c.buf) }

// Flush: nats.go's flusher goroutine writes the buffer out as soon as it
// runs; a round trip per message (nc.Flush) would measure something else.
func (c *natsPubConn) Flush(context.Context) error { return c.nc.LastError() }

func (c *natsPubConn) Close() error {
	err := c.nc.FlushTimeout(30 * time.Second)
	c.nc.Close()
	return err
}

type natsSubConn struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func natsSub(ctx context.Context, s childSpec) (subConn, error) {
	nc, err := natsConnect(s)
	if err != nil {
		return nil, err
	}
	sub, err := nc.SubscribeSync(s.Topic)
	if err == nil {
		// No client-side limit: a slow subscriber must not drop.
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = nc.Flush() // the server has the subscription
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsSubConn{nc: nc, sub: sub}, nil
}

func (c *natsSubConn) Recv(ctx context.Context) ([]byte, error) {
	m, err := c.sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func (c *natsSubConn) Close() error {
	if n, err := c.sub.Dropped(); err == nil && n > 0 {
		fmt.Fprintf(os.Stderr, "nats: subscriber dropped %d messages\n", n)
	}
	c.nc.Close()
	return nil
}

// --- Redis pub/sub with go-redis ---

type redisPubConn struct {
	rdb   *redis.Client
	pipe  redis.Pipeliner
	n     int
	batch int
	topic string
	buf   []byte
}

func redisPub(ctx context.Context, s childSpec) (pubConn, string, error) {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 1, ReadTimeout: -1, WriteTimeout: -1})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, "", err
	}
	return &redisPubConn{rdb: rdb, pipe: rdb.Pipeline(), batch: max(1, s.Batch), topic: s.Topic, buf: make([]byte, s.Size)}, "", nil
}

func (c *redisPubConn) Buf(context.Context, int) ([]byte, bool, error) { return c.buf, false, nil }

// Send queues PUBLISH in a pipeline; a full pipeline goes out in one
// round trip (the way to make Redis pub/sub fast).
func (c *redisPubConn) Send(ctx context.Context) error {
	c.pipe.Publish(ctx, c.topic, string(c.buf)) // a copy: buf is reused
	c.n++
	if c.n >= c.batch {
		return c.Flush(ctx)
	}
	return nil
}

func (c *redisPubConn) Flush(ctx context.Context) error {
	if c.n == 0 {
		return nil
	}
	c.n = 0
	_, err := c.pipe.Exec(ctx)
	return err
}

func (c *redisPubConn) Close() error {
	err := c.Flush(context.Background())
	c.rdb.Close()
	return err
}

type redisSubConn struct {
	rdb  *redis.Client
	ps   *redis.PubSub
	stop func() bool
}

func redisSub(ctx context.Context, s childSpec) (subConn, error) {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, ReadTimeout: -1, WriteTimeout: -1})
	ps := rdb.Subscribe(ctx, s.Topic)
	if _, err := ps.Receive(ctx); err != nil { // the subscription is confirmed
		ps.Close()
		rdb.Close()
		return nil, err
	}
	// ReceiveMessage does not watch ctx: closing the connection unblocks it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	return &redisSubConn{rdb: rdb, ps: ps, stop: stop}, nil
}

func (c *redisSubConn) Recv(ctx context.Context) ([]byte, error) {
	m, err := c.ps.ReceiveMessage(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return []byte(m.Payload), nil
}

func (c *redisSubConn) Close() error {
	c.stop()
	c.ps.Close()
	return c.rdb.Close()
}
