// POSIX message queues: one queue per subscriber, which the publisher
// creates and sends every message to (mq_send copies; a full queue blocks
// the publisher: nothing is lost). A sleeping subscriber blocks in
// mq_timedreceive, a busy one polls with O_NONBLOCK.
#include <mqueue.h>

static mqd_t *mq_q;
static uint8_t *mq_out, *mq_in;
static long mq_insize;

static void mq_name(char *out, size_t n, long i) { snprintf(out, n, "/%s-%ld", S.addr, i); }

// mq_depth: as many messages per queue as this user's RLIMIT_MSGQUEUE
// (bytes over all its queues, which root cannot raise without
// CAP_SYS_RESOURCE) and fs.mqueue.msg_max allow, at most 1024.
static long mq_depth(void) {
	struct rlimit rl;
	long budget = 819200, max = 10;
	if (getrlimit(RLIMIT_MSGQUEUE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		budget = (long)rl.rlim_cur;
	else if (rl.rlim_cur == RLIM_INFINITY)
		budget = 1L << 40;
	FILE *f = fopen("/proc/sys/fs/mqueue/msg_max", "r");
	if (f) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 10;
		fclose(f);
	}
	// The kernel charges each slot the message and about 100 bytes of
	// bookkeeping (struct msg_msg and the priority tree).
	long d = budget / S.subs / (S.size + 128);
	if (d > max)
		d = max;
	if (d > 1024)
		d = 1024;
	return d < 1 ? 1 : d;
}

static int pub_open(char *addr, size_t n) {
	(void)addr, (void)n;
	struct mq_attr a = {.mq_maxmsg = mq_depth(), .mq_msgsize = S.size};
	mq_q = calloc(S.subs, sizeof *mq_q);
	for (long i = 0; i < S.subs; i++) {
		char name[600];
		mq_name(name, sizeof name, i);
		mq_unlink(name);
		mq_q[i] = mq_open(name, O_WRONLY | O_CREAT | O_EXCL, 0600, &a);
		if (mq_q[i] == (mqd_t)-1) {
			fail("mq_open %s: %s", name, errno);
			return -1;
		}
	}
	mq_out = malloc(S.size);
	return 0;
}

static uint8_t *pub_buf(int *fresh) {
	*fresh = 0;
	return mq_out;
}

static int pub_send(void) {
	for (long i = 0; i < S.subs; i++)
		while (mq_send(mq_q[i], (const char *)mq_out, S.size, 0) < 0) {
			if (errno != EINTR) {
				fail("mq_send%s: %s", "", errno);
				return -1;
			}
		}
	return 0;
}

static int pub_flush(void) { return 0; }

static void pub_close(void) {
	for (long i = 0; i < S.subs; i++) {
		char name[600];
		mq_name(name, sizeof name, i);
		mq_close(mq_q[i]);
		mq_unlink(name); // the subscribers' descriptors keep the queue
	}
}

static mqd_t mq_sub;

static int sub_open(void) {
	char name[600];
	mq_name(name, sizeof name, S.index);
	mq_sub = mq_open(name, O_RDONLY | (S.busy ? O_NONBLOCK : 0));
	if (mq_sub == (mqd_t)-1) {
		fail("mq_open %s: %s", name, errno);
		return -1;
	}
	struct mq_attr a;
	mq_getattr(mq_sub, &a);
	mq_insize = a.mq_msgsize;
	mq_in = malloc(mq_insize);
	return 0;
}

static const uint8_t *sub_recv(long *n, volatile int *stop) {
	(void)stop;
	ssize_t r;
	if (S.busy) {
		r = mq_receive(mq_sub, (char *)mq_in, mq_insize, NULL);
	} else {
		// mq_timedreceive takes a CLOCK_REALTIME deadline: wake up every
		// 100 ms to look at the stop flag.
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000)
			ts.tv_sec++, ts.tv_nsec -= 1000000000;
		r = mq_timedreceive(mq_sub, (char *)mq_in, mq_insize, NULL, &ts);
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != ETIMEDOUT && errno != EINTR)
			fail("mq_receive%s: %s", "", errno);
		return NULL;
	}
	*n = r;
	return mq_in;
}

static void sub_release(void) {}
static void sub_close(void) { mq_close(mq_sub); }
