//go:build verbs && cgo

package verbs

/*
#cgo LDFLAGS: -libverbs
#include <infiniband/verbs.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

// One write of a Post, flattened so Go need not build unions.
struct shm_write {
	uint64_t wr_id, laddr, raddr;
	uint32_t len, lkey, rkey, imm;
	int with_imm;
};

// Posts n writes as one chain, every one signaled (the Go side reports
// only those its user asked for).
static int shm_post_writes(struct ibv_qp *qp, struct shm_write *w, int n) {
	struct ibv_send_wr *wrs = calloc(n, sizeof(*wrs)), *bad;
	struct ibv_sge *sges = calloc(n, sizeof(*sges));
	if (!wrs || !sges) { free(wrs); free(sges); return ENOMEM; }
	for (int i = 0; i < n; i++) {
		sges[i].addr = w[i].laddr; sges[i].length = w[i].len; sges[i].lkey = w[i].lkey;
		wrs[i].wr_id = w[i].wr_id;
		wrs[i].next = i + 1 < n ? &wrs[i + 1] : NULL;
		wrs[i].sg_list = &sges[i];
		wrs[i].num_sge = w[i].len ? 1 : 0;
		wrs[i].opcode = w[i].with_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
		wrs[i].send_flags = IBV_SEND_SIGNALED;
		wrs[i].imm_data = htonl(w[i].imm);
		wrs[i].wr.rdma.remote_addr = w[i].raddr;
		wrs[i].wr.rdma.rkey = w[i].rkey;
	}
	int rc = ibv_post_send(qp, wrs, &bad);
	free(wrs); free(sges);
	return rc;
}

// Posts n zero-length receives: each takes one immediate.
static int shm_post_recvs(struct ibv_qp *qp, int n) {
	for (int i = 0; i < n; i++) {
		struct ibv_recv_wr wr = {0}, *bad;
		int rc = ibv_post_recv(qp, &wr, &bad);
		if (rc) return rc;
	}
	return 0;
}

struct shm_wc { uint64_t wr_id; uint32_t status, opcode, len, imm; };

static int shm_poll(struct ibv_cq *cq, struct shm_wc *out, int n) {
	struct ibv_wc wc[64];
	if (n > 64) n = 64;
	int got = ibv_poll_cq(cq, n, wc);
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id; out[i].status = wc[i].status; out[i].opcode = wc[i].opcode;
		out[i].len = wc[i].byte_len; out[i].imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
	}
	return got;
}

// Waits for the next completion event and re-arms the queue.
static int shm_wait(struct ibv_comp_channel *ch) {
	struct ibv_cq *cq; void *ctx;
	if (ibv_get_cq_event(ch, &cq, &ctx)) return -1;
	ibv_ack_cq_events(cq, 1);
	return ibv_req_notify_cq(cq, 0);
}

// What each side tells the other to connect its queue pair.
struct shm_qpinfo { uint32_t qpn, psn; uint16_t lid; uint8_t gid[16]; };

static int shm_connect(struct ibv_qp *qp, uint8_t port, int gid_index, enum ibv_mtu mtu,
                       struct shm_qpinfo *local, struct shm_qpinfo *remote) {
	struct ibv_qp_attr a = {0};
	a.qp_state = IBV_QPS_INIT; a.pkey_index = 0; a.port_num = port;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (rc) return rc;

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR; a.path_mtu = mtu; a.dest_qp_num = remote->qpn; a.rq_psn = remote->psn;
	a.max_dest_rd_atomic = 1; a.min_rnr_timer = 12;
	a.ah_attr.dlid = remote->lid; a.ah_attr.port_num = port;
	static const uint8_t zero[16];
	if (memcmp(remote->gid, zero, 16)) { // RoCE, or IB across subnets
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, remote->gid, 16);
		a.ah_attr.grh.sgid_index = gid_index;
		a.ah_attr.grh.hop_limit = 64;
	}
	rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
	                   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (rc) return rc;

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS; a.sq_psn = local->psn; a.timeout = 14; a.retry_cnt = 7;
	a.rnr_retry = 7; // retry for ever while the receiver has no receive posted: backpressure
	a.max_rd_atomic = 1;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
	                     IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
}

static int shm_qp_error(struct ibv_qp *qp) {
	struct ibv_qp_attr a = {0};
	a.qp_state = IBV_QPS_ERR;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE);
}

static struct ibv_qp *shm_create_qp(struct ibv_pd *pd, struct ibv_cq *cq, int sdepth, int rdepth) {
	struct ibv_qp_init_attr a = {0};
	a.send_cq = cq; a.recv_cq = cq; a.qp_type = IBV_QPT_RC;
	a.cap.max_send_wr = sdepth; a.cap.max_recv_wr = rdepth; a.cap.max_send_sge = 1; a.cap.max_recv_sge = 1;
	return ibv_create_qp(pd, &a);
}

static int shm_query_port(struct ibv_context *c, uint8_t port, enum ibv_mtu *mtu, uint16_t *lid) {
	struct ibv_port_attr pa;
	int rc = ibv_query_port(c, port, &pa);
	if (rc) return rc;
	if (pa.state != IBV_PORT_ACTIVE) return ENETDOWN;
	*mtu = pa.active_mtu; *lid = pa.lid;
	return 0;
}

static struct ibv_device *shm_device(struct ibv_device **l, int i) { return l[i]; }
*/
import "C"

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"unsafe"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/internal/cq"
	"github.com/shimmy-dev/shimmy/rdma/tcp"
)

// Transport is an open RDMA device and the tcp transport that carries the
// links' control connections.
type Transport struct {
	o    Options
	ctl  *tcp.Transport
	dev  *C.struct_ibv_context
	mtu  C.enum_ibv_mtu
	lid  C.uint16_t
	gid  [16]byte
	once sync.Once
}

var _ rdma.Transport = (*Transport)(nil)

// New opens the device. No device (or the named one missing) is
// rdma.ErrNoDevice wrapping the cause.
func New(o Options) (rdma.Transport, error) {
	o = o.withDefaults()
	ctl, err := tcp.New(o.Options)
	if err != nil {
		return nil, err
	}
	var n C.int
	list, errno := C.ibv_get_device_list(&n)
	if list == nil {
		return nil, fmt.Errorf("%w: ibv_get_device_list: %w", rdma.ErrNoDevice, errno)
	}
	defer C.ibv_free_device_list(list)
	var dev *C.struct_ibv_device
	var names []string
	for i := 0; i < int(n); i++ {
		d := C.shm_device(list, C.int(i))
		name := C.GoString(C.ibv_get_device_name(d))
		names = append(names, name)
		if dev == nil && (o.Device == "" || o.Device == name) {
			dev = d
		}
	}
	if dev == nil {
		return nil, fmt.Errorf("%w: device %q not among %d found [%s]", rdma.ErrNoDevice, o.Device, n, strings.Join(names, " "))
	}
	t := &Transport{o: o, ctl: ctl}
	if t.dev, errno = C.ibv_open_device(dev); t.dev == nil {
		return nil, fmt.Errorf("%w: ibv_open_device: %w", rdma.ErrNoDevice, errno)
	}
	if rc := C.shm_query_port(t.dev, C.uint8_t(o.Port), &t.mtu, &t.lid); rc != 0 {
		t.Close()
		return nil, fmt.Errorf("%w: port %d of %s: errno %d", rdma.ErrNoDevice, o.Port, C.GoString(C.ibv_get_device_name(dev)), int(rc))
	}
	var gid C.union_ibv_gid
	if rc := C.ibv_query_gid(t.dev, C.uint8_t(o.Port), C.int(o.GIDIndex), &gid); rc != 0 {
		t.Close()
		return nil, fmt.Errorf("%w: ibv_query_gid %d: errno %d", rdma.ErrNoDevice, o.GIDIndex, int(rc))
	}
	copy(t.gid[:], C.GoBytes(unsafe.Pointer(&gid), 16))
	return t, nil
}

// Close closes the device; close the links first.
func (t *Transport) Close() error {
	t.once.Do(func() {
		if t.dev != nil {
			C.ibv_close_device(t.dev)
		}
	})
	return nil
}

// Dial implements rdma.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, opts rdma.DialOptions) (rdma.Conn, error) {
	ctl, err := t.ctl.Dial(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	return t.link(ctx, ctl)
}

// Listen implements rdma.Transport.
func (t *Transport) Listen(addr string) (rdma.Listener, error) {
	ln, err := t.ctl.Listen(addr)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: ln, t: t}, nil
}

type listener struct {
	rdma.Listener
	t *Transport
}

// Accept returns the next link whose queue pair connected; a failed
// setup is reported like a refusal and Accept goes on.
func (l *listener) Accept(ctx context.Context) (rdma.Conn, error) {
	for {
		ctl, err := l.Listener.Accept(ctx)
		if err != nil {
			return nil, err
		}
		c, err := l.t.link(ctx, ctl)
		if err == nil {
			return c, nil
		}
		l.t.o.Log.WithError(err).WithField("peer", ctl.Peer()).Warn("rdma/verbs: queue pair setup failed")
		if l.t.o.OnReject != nil {
			l.t.o.OnReject(ctl.RemoteAddr().String(), err)
		}
	}
}

// conn is a link: an RC queue pair whose control connection is ctl.
type conn struct {
	rdma.Conn // ctl: Peer, RemoteAddr, Send, Recv, Done, Err
	t         *Transport
	pd        *C.struct_ibv_pd
	ch        *C.struct_ibv_comp_channel
	hcq       *C.struct_ibv_cq
	qp        *C.struct_ibv_qp
	cq        *cq.Queue

	smu    sync.Mutex
	slots  []slot      // by wr_id, under smu
	free   chan uint32 // free send slots
	mu     sync.Mutex  // regions
	region map[*region]bool
	polled chan struct{} // closed when the poller is done

	// live is held (read) around every use of the queue pair, which
	// destroy frees under its write lock.
	live sync.RWMutex
	dead bool
}

type slot struct {
	id       uint64
	len      uint32
	signaled bool
}

var _ rdma.Conn = (*conn)(nil)

func (t *Transport) link(ctx context.Context, ctl rdma.Conn) (_ rdma.Conn, err error) {
	c := &conn{Conn: ctl, t: t, cq: cq.New(t.o.CQDepth), region: map[*region]bool{}, polled: make(chan struct{})}
	defer func() {
		if err != nil {
			tcp.Abort(ctl, err)
			c.destroy()
		}
	}()
	var errno error
	if c.pd, errno = C.ibv_alloc_pd(t.dev); c.pd == nil {
		return nil, fmt.Errorf("rdma/verbs: ibv_alloc_pd: %w", errno)
	}
	if c.ch, errno = C.ibv_create_comp_channel(t.dev); c.ch == nil {
		return nil, fmt.Errorf("rdma/verbs: ibv_create_comp_channel: %w", errno)
	}
	depth := t.o.SendDepth + t.o.CQDepth
	if c.hcq, errno = C.ibv_create_cq(t.dev, C.int(depth), nil, c.ch, 0); c.hcq == nil {
		return nil, fmt.Errorf("rdma/verbs: ibv_create_cq: %w", errno)
	}
	if c.qp, errno = C.shm_create_qp(c.pd, c.hcq, C.int(t.o.SendDepth), C.int(t.o.CQDepth)); c.qp == nil {
		return nil, fmt.Errorf("rdma/verbs: ibv_create_qp: %w", errno)
	}
	var psn [4]byte
	rand.Read(psn[:])
	local := C.struct_shm_qpinfo{qpn: c.qp.qp_num, psn: C.uint32_t(binary.LittleEndian.Uint32(psn[:]) & 0xffffff), lid: t.lid}
	for i, b := range t.gid {
		local.gid[i] = C.uint8_t(b)
	}
	remote, err := exchange(ctx, ctl, local)
	if err != nil {
		return nil, err
	}
	if rc := C.shm_connect(c.qp, C.uint8_t(t.o.Port), C.int(t.o.GIDIndex), t.mtu, &local, &remote); rc != 0 {
		return nil, fmt.Errorf("rdma/verbs: connect queue pair: errno %d", int(rc))
	}
	if rc := C.shm_post_recvs(c.qp, C.int(t.o.CQDepth)); rc != 0 {
		return nil, fmt.Errorf("rdma/verbs: ibv_post_recv: errno %d", int(rc))
	}
	c.slots = make([]slot, t.o.SendDepth)
	c.free = make(chan uint32, t.o.SendDepth)
	for i := range c.slots {
		c.free <- uint32(i)
	}
	// A receive is posted again for every immediate the user polls: the
	// sender's RNR retries hold it back meanwhile.
	c.cq.OnPoll = func(n int) {
		c.live.RLock()
		defer c.live.RUnlock()
		if c.dead {
			return
		}
		if rc := C.shm_post_recvs(c.qp, C.int(n)); rc != 0 {
			c.fail(fmt.Errorf("rdma/verbs: ibv_post_recv: errno %d", int(rc)))
		}
	}
	C.ibv_req_notify_cq(c.hcq, 0)
	go c.poll()
	go func() {
		<-ctl.Done()
		c.cq.Close(ctl.Err())
		// In the error state every posted request completes (flushed):
		// one more receive guarantees the poller an event to wake on.
		C.shm_qp_error(c.qp)
		C.shm_post_recvs(c.qp, 1)
		<-c.polled
		c.destroy()
	}()
	return c, nil
}

// exchange swaps queue pair descriptions over the control connection:
// its first message each way.
func exchange(ctx context.Context, ctl rdma.Conn, local C.struct_shm_qpinfo) (C.struct_shm_qpinfo, error) {
	b := binary.LittleEndian.AppendUint32(nil, uint32(local.qpn))
	b = binary.LittleEndian.AppendUint32(b, uint32(local.psn))
	b = binary.LittleEndian.AppendUint16(b, uint16(local.lid))
	for _, g := range local.gid {
		b = append(b, byte(g))
	}
	if err := ctl.Send(ctx, b); err != nil {
		return local, err
	}
	m, err := ctl.Recv(ctx)
	if err != nil {
		return local, err
	}
	if len(m) != len(b) {
		return local, fmt.Errorf("%w: queue pair description of %d bytes", rdma.ErrProtocol, len(m))
	}
	var r C.struct_shm_qpinfo
	r.qpn = C.uint32_t(binary.LittleEndian.Uint32(m))
	r.psn = C.uint32_t(binary.LittleEndian.Uint32(m[4:]))
	r.lid = C.uint16_t(binary.LittleEndian.Uint16(m[8:]))
	for i := range r.gid {
		r.gid[i] = C.uint8_t(m[10+i])
	}
	return r, nil
}

// poll moves hardware completions to the user's queue until the link
// closes.
func (c *conn) poll() {
	defer close(c.polled)
	var wcs [64]C.struct_shm_wc
	for {
		for {
			n := int(C.shm_poll(c.hcq, &wcs[0], 64))
			if n <= 0 {
				break
			}
			for _, wc := range wcs[:n] {
				c.complete(wc)
			}
		}
		select {
		case <-c.Conn.Done():
			return
		default:
		}
		if C.shm_wait(c.ch) != 0 {
			c.fail(fmt.Errorf("rdma/verbs: completion channel failed"))
			return
		}
	}
}

func (c *conn) complete(wc C.struct_shm_wc) {
	if wc.status != C.IBV_WC_SUCCESS {
		if wc.status == C.IBV_WC_WR_FLUSH_ERR {
			return // the link is closing
		}
		err := fmt.Errorf("rdma/verbs: %s", C.GoString(C.ibv_wc_status_str(C.enum_ibv_wc_status(wc.status))))
		if wc.status == C.IBV_WC_REM_ACCESS_ERR || wc.status == C.IBV_WC_LOC_PROT_ERR {
			err = fmt.Errorf("%w: %w", rdma.ErrRegion, err)
		}
		c.fail(err)
		return
	}
	switch wc.opcode {
	case C.IBV_WC_RECV_RDMA_WITH_IMM:
		c.cq.Push(rdma.Completion{Op: rdma.OpImm, Imm: uint32(wc.imm), Len: uint32(wc.len)})
	case C.IBV_WC_RDMA_WRITE:
		c.smu.Lock()
		s := c.slots[wc.wr_id]
		c.smu.Unlock()
		if s.signaled {
			c.cq.PushLocal(rdma.Completion{Op: rdma.OpWrite, ID: s.id, Len: s.len})
		}
		c.free <- uint32(wc.wr_id)
	}
}

// fail closes the link for err (telling the peer) and returns its error.
func (c *conn) fail(err error) error { return tcp.Abort(c.Conn, err) }

// destroy frees the verbs objects, in reverse order of creation.
func (c *conn) destroy() {
	c.live.Lock()
	defer c.live.Unlock()
	c.dead = true
	c.mu.Lock()
	for r := range c.region {
		C.ibv_dereg_mr(r.mr)
	}
	c.region = nil
	c.mu.Unlock()
	if c.qp != nil {
		C.ibv_destroy_qp(c.qp)
	}
	if c.hcq != nil {
		C.ibv_destroy_cq(c.hcq)
	}
	if c.ch != nil {
		C.ibv_destroy_comp_channel(c.ch)
	}
	if c.pd != nil {
		C.ibv_dealloc_pd(c.pd)
	}
}

func (c *conn) RemoteAddr() net.Addr          { return c.Conn.RemoteAddr() }
func (c *conn) Poll(cs []rdma.Completion) int { return c.cq.Poll(cs) }
func (c *conn) Wait(ctx context.Context, cs []rdma.Completion) (int, error) {
	return c.cq.Wait(ctx, cs)
}

type region struct {
	c          *conn
	mr         *C.struct_ibv_mr
	lkey, rkey C.uint32_t // copied: mr is freed at Close
	mem        []byte
}

func (r *region) Bytes() []byte { return r.mem }

func (r *region) Key() rdma.RemoteKey {
	return rdma.RemoteKey{Key: uint32(r.rkey), Addr: uint64(uintptr(unsafe.Pointer(&r.mem[0]))), Len: uint64(len(r.mem))}
}

func (r *region) Close() error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if !r.c.region[r] {
		return nil
	}
	delete(r.c.region, r)
	if rc := C.ibv_dereg_mr(r.mr); rc != 0 {
		return fmt.Errorf("rdma/verbs: ibv_dereg_mr: errno %d", int(rc))
	}
	return nil
}

func (c *conn) registered(r *region) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.region[r]
}

// Register implements rdma.Conn; mem must lie outside the Go heap.
func (c *conn) Register(mem []byte) (rdma.Region, error) {
	if len(mem) == 0 {
		return nil, fmt.Errorf("%w: empty region", rdma.ErrRegion)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.region == nil {
		return nil, rdma.Closed(c.Conn.Err())
	}
	mr, errno := C.ibv_reg_mr(c.pd, unsafe.Pointer(&mem[0]), C.size_t(len(mem)), C.IBV_ACCESS_LOCAL_WRITE|C.IBV_ACCESS_REMOTE_WRITE)
	if mr == nil {
		return nil, fmt.Errorf("%w: ibv_reg_mr: %w", rdma.ErrRegion, errno)
	}
	r := &region{c: c, mr: mr, lkey: mr.lkey, rkey: mr.rkey, mem: mem}
	c.region[r] = true
	return r, nil
}

// Post implements rdma.Conn: one ibv_post_send chain per SendDepth writes.
func (c *conn) Post(ws ...rdma.Write) error {
	for i := range ws {
		r, ok := ws[i].Local.(*region)
		if !ok || r.c != c || !c.registered(r) {
			return fmt.Errorf("%w: local region not registered on this link", rdma.ErrRegion)
		}
		if err := ws[i].Check(); err != nil {
			return err
		}
	}
	batch := make([]C.struct_shm_write, 0, min(len(ws), len(c.slots)))
	for len(ws) > 0 {
		batch = batch[:0]
		for len(ws) > 0 && len(batch) < cap(batch) {
			w := &ws[0]
			var id uint32
			select {
			case id = <-c.free:
			case <-c.Conn.Done():
				return rdma.Closed(c.Conn.Err())
			}
			c.smu.Lock()
			c.slots[id] = slot{id: w.ID, len: w.Len, signaled: w.Signaled}
			c.smu.Unlock()
			r := w.Local.(*region)
			batch = append(batch, C.struct_shm_write{
				wr_id: C.uint64_t(id),
				laddr: C.uint64_t(uintptr(unsafe.Pointer(&r.mem[0])) + uintptr(w.LocalOff)),
				raddr: C.uint64_t(w.Remote.Addr + w.RemoteOff),
				len:   C.uint32_t(w.Len), lkey: r.lkey, rkey: C.uint32_t(w.Remote.Key),
				imm: C.uint32_t(w.Imm), with_imm: boolInt(w.WithImm),
			})
			ws = ws[1:]
		}
		if err := c.post(batch); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) post(batch []C.struct_shm_write) error {
	c.live.RLock()
	defer c.live.RUnlock()
	if c.dead {
		return rdma.Closed(c.Conn.Err())
	}
	if rc := C.shm_post_writes(c.qp, &batch[0], C.int(len(batch))); rc != 0 {
		return c.fail(fmt.Errorf("rdma/verbs: ibv_post_send: errno %d", int(rc)))
	}
	return nil
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
