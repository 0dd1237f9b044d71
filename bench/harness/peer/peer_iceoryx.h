// Eclipse iceoryx 2 through its C binding: loaned chunks published and
// taken in place (zero-copy), lossless (the publisher waits for a
// subscriber whose queue is full: ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER
// and QueueFullPolicy_BLOCK_PRODUCER; the defaults drop). RouDi, the
// daemon that owns the shared memory, is started by the harness with
// mempools sized for the case. A sleeping subscriber waits on a WaitSet
// (HAS_DATA), a busy one polls iox_sub_take_chunk.
#include <iceoryx_binding_c/enums.h>
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/notification_info.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

// queue capacity of a subscriber: iceoryx's largest (the harness sizes
// RouDi's mempool for it)
enum { IOX_QUEUE = 256 };

static iox_pub_storage_t iox_pst;
static iox_pub_t iox_pub;
static void *iox_chunk;
static int iox_joined;

static void iox_init(const char *role) {
	char name[64];
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	snprintf(name, sizeof name, "bench-%s-%d", role, (int)getpid());
	iox_runtime_init(name);
}

static int pub_open(char *addr, size_t n) {
	(void)addr, (void)n;
	iox_init("pub");
	iox_pub_options_t o;
	iox_pub_options_init(&o);
	o.historyCapacity = 0;
	o.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	iox_pub = iox_pub_init(&iox_pst, "shimmy-bench", S.addr, "msg", &o);
	return iox_pub ? 0 : -1;
}

static uint8_t *pub_buf(int *fresh) {
	*fresh = 1;
	if (!iox_joined) {
		// The subscribers said READY once subscribed; the publisher's
		// side of the connection may lag a little.
		for (int i = 0; i < 10000 && !iox_pub_has_subscribers(iox_pub); i++)
			usleep(1000);
		iox_joined = 1;
	}
	for (int tries = 0;; tries++) {
		enum iox_AllocationResult r = iox_pub_loan_chunk(iox_pub, &iox_chunk, (uint32_t)S.size);
		if (r == AllocationResult_SUCCESS)
			return iox_chunk;
		if (tries > 100000) {
			snprintf(fatal_msg, sizeof fatal_msg, "iox_pub_loan_chunk: result %d", (int)r);
			return NULL;
		}
		usleep(10); // mempool exhausted: chunks still held by subscribers
	}
}

static int pub_send(void) {
	iox_pub_publish_chunk(iox_pub, iox_chunk);
	return 0;
}

static int pub_flush(void) { return 0; }

static void pub_close(void) {
	iox_pub_deinit(iox_pub);
	iox_runtime_shutdown();
}

static iox_sub_storage_t iox_sst;
static iox_sub_t iox_sub;
static iox_ws_storage_t iox_wst;
static iox_ws_t iox_ws;
static const void *iox_taken;

static int sub_open(void) {
	iox_init("sub");
	iox_sub_options_t o;
	iox_sub_options_init(&o);
	o.queueCapacity = IOX_QUEUE;
	o.historyRequest = 0;
	o.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	iox_sub = iox_sub_init(&iox_sst, "shimmy-bench", S.addr, "msg", &o);
	for (int i = 0; i < 10000 && iox_sub_get_subscription_state(iox_sub) != SubscribeState_SUBSCRIBED; i++)
		usleep(1000);
	if (iox_sub_get_subscription_state(iox_sub) != SubscribeState_SUBSCRIBED) {
		snprintf(fatal_msg, sizeof fatal_msg, "iceoryx: not subscribed within 10 s");
		return -1;
	}
	if (!S.busy) {
		iox_ws = iox_ws_init(&iox_wst);
		iox_ws_attach_subscriber_state(iox_ws, iox_sub, SubscriberState_HAS_DATA, 0, NULL);
	}
	return 0;
}

static const uint8_t *sub_recv(long *n, volatile int *stop) {
	(void)stop;
	if (iox_sub_take_chunk(iox_sub, &iox_taken) != ChunkReceiveResult_SUCCESS) {
		if (!S.busy) {
			iox_notification_info_t info[1];
			uint64_t missed;
			struct timespec to = {.tv_sec = 0, .tv_nsec = 100000000};
			iox_ws_timed_wait(iox_ws, to, info, 1, &missed);
		}
		return NULL; // the caller looks at its stop flag and comes back
	}
	*n = S.size; // chunks are loaned at the message size exactly
	return iox_taken;
}

static void sub_release(void) { iox_sub_release_chunk(iox_sub, iox_taken); }

static void sub_close(void) {
	if (iox_ws)
		iox_ws_deinit(iox_ws);
	iox_sub_deinit(iox_sub);
	iox_runtime_shutdown();
}
