// ZeroMQ over ipc://: the publisher binds an XPUB socket and, before the
// first message, waits until every subscriber's subscription has reached
// it (a PUB socket drops what it sends before then); high-water marks are
// unlimited on both sides, so nothing is dropped, and the harness's window
// bounds the queues. A sleeping subscriber blocks in zmq_msg_recv, a busy
// one polls with ZMQ_DONTWAIT.
#include <zmq.h>

static void *zctx, *zsock;
static uint8_t *zout;
static zmq_msg_t zmsg;
static int zjoined;

static void zfail(const char *what) { snprintf(fatal_msg, sizeof fatal_msg, "%s: %s", what, zmq_strerror(zmq_errno())); }

// zopen makes a socket of type with the high-water mark hwm unlimited and
// returns the endpoint ipc://<addr> in ep.
static void zopen(int type, int hwm, char *ep, size_t n) {
	int zero = 0;
	snprintf(ep, n, "ipc://%s", S.addr);
	zctx = zmq_ctx_new();
	zsock = zmq_socket(zctx, type);
	zmq_setsockopt(zsock, hwm, &zero, sizeof zero);
}

static int pub_open(char *addr, size_t n) {
	(void)addr, (void)n;
	int one = 1;
	char ep[600];
	zopen(ZMQ_XPUB, ZMQ_SNDHWM, ep, sizeof ep);
	zmq_setsockopt(zsock, ZMQ_XPUB_VERBOSE, &one, sizeof one);
	if (zmq_bind(zsock, ep) < 0) {
		zfail("zmq_bind");
		return -1;
	}
	zout = malloc(S.size);
	return 0;
}

static uint8_t *pub_buf(int *fresh) {
	*fresh = 0;
	if (!zjoined) {
		int ms = 10000;
		zmq_setsockopt(zsock, ZMQ_RCVTIMEO, &ms, sizeof ms);
		for (long i = 0; i < S.subs; i++) {
			char sub[256];
			if (zmq_recv(zsock, sub, sizeof sub, 0) < 0) {
				zfail("waiting for subscriptions");
				return NULL;
			}
		}
		zjoined = 1;
	}
	return zout;
}

static int pub_send(void) {
	while (zmq_send(zsock, zout, S.size, 0) < 0) {
		if (zmq_errno() != EINTR) {
			zfail("zmq_send");
			return -1;
		}
	}
	return 0;
}

static int pub_flush(void) { return 0; }

static void pub_close(void) {
	int linger = 30000; // deliver what is queued
	zmq_setsockopt(zsock, ZMQ_LINGER, &linger, sizeof linger);
	zmq_close(zsock);
	zmq_ctx_term(zctx);
}

static int sub_open(void) {
	int ms = 100;
	char ep[600];
	zopen(ZMQ_SUB, ZMQ_RCVHWM, ep, sizeof ep);
	zmq_setsockopt(zsock, ZMQ_RCVTIMEO, &ms, sizeof ms);
	if (zmq_connect(zsock, ep) < 0 || zmq_setsockopt(zsock, ZMQ_SUBSCRIBE, "", 0) < 0) {
		zfail("zmq_connect");
		return -1;
	}
	zmq_msg_init(&zmsg);
	return 0;
}

static const uint8_t *sub_recv(long *n, volatile int *stop) {
	(void)stop;
	int r = zmq_msg_recv(&zmsg, zsock, S.busy ? ZMQ_DONTWAIT : 0);
	if (r < 0) {
		if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
			zfail("zmq_msg_recv");
		return NULL;
	}
	*n = (long)zmq_msg_size(&zmsg);
	return zmq_msg_data(&zmsg);
}

static void sub_release(void) {}

static void sub_close(void) {
	int zero = 0;
	zmq_msg_close(&zmsg);
	zmq_setsockopt(zsock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_close(zsock);
	zmq_ctx_term(zctx);
}
