// peer: the publisher or subscriber of a C peer system of shimmy-bench
// (iceoryx, POSIX message queues, ZeroMQ), speaking the harness's child
// protocol exactly as the Go children do (bench/harness/child.go): the
// spec as JSON in SHIMMY_BENCH_CHILD, "READY [addr]" when joined, "GO" or
// "STOP" on stdin, "RESULT {json}" at the end, the progress counters in
// the shared control file, latency samples as little-endian int64s. The
// payload (sequence, check, CLOCK_MONOTONIC stamp, filler, trailer) and
// its check are the ones of payload.go, the pacing that of publish: an
// absolute deadline per message (clock_nanosleep TIMER_ABSTIME).
//
// The harness compiles it once per system with one of PEER_MQ, PEER_ZMQ
// or PEER_ICEORYX defined, so a missing library skips only its system.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

// ---- the spec ----

struct spec {
	char role[8], system[64], addr[512], topic[256], ctl[512], samples[512];
	long size, count, window, subs, index, every;
	double rate;
	int64_t deadline; // ns
	int busy;         // the system's name ends in -busy: poll, never sleep
};

// jfind returns the text after "key": in a flat JSON object, or NULL.
static const char *jfind(const char *j, const char *key) {
	char pat[80];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(j, pat);
	return p ? p + strlen(pat) : NULL;
}

static void jstr(const char *j, const char *key, char *out, size_t n) {
	const char *p = jfind(j, key);
	out[0] = 0;
	if (!p || *p != '"')
		return;
	p++;
	size_t i = 0;
	for (; *p && *p != '"' && i + 1 < n; p++) {
		if (*p == '\\' && p[1])
			p++;
		out[i++] = *p;
	}
	out[i] = 0;
}

static double jnum(const char *j, const char *key) {
	const char *p = jfind(j, key);
	return p ? strtod(p, NULL) : 0;
}

// ---- clock, CPU, payload ----

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_self(void) {
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

enum { HDR = 16, TAIL = 8, TAIL_AFTER = 32 };

static uint32_t crc_table[8][256];

static void crc_init(void) {
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1; // Castagnoli
		crc_table[0][i] = c;
	}
	for (int t = 1; t < 8; t++)
		for (int i = 0; i < 256; i++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
	uint64_t c = ~crc;
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
	}
	for (; n; n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

// crc32c is Go's crc32.Update(crc, castagnoli, p): hardware CRC where the
// CPU has it (as Go uses), slicing-by-8 otherwise.
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return crc32c_hw(crc, p, n);
#endif
	uint32_t c = ~crc;
	for (; n >= 8; n -= 8, p += 8) {
		c ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
		c = crc_table[7][c & 0xff] ^ crc_table[6][(c >> 8) & 0xff] ^ crc_table[5][(c >> 16) & 0xff] ^
		    crc_table[4][c >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
	}
	for (; n; n--)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static uint64_t mix64(uint64_t x) {
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ x >> 30) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ x >> 27) * 0x94d049bb133111ebull;
	return x ^ x >> 31;
}

static uint32_t header_check(uint32_t filler_crc, uint32_t seq, int64_t ts, uint64_t trailer) {
	uint64_t x = mix64((uint64_t)filler_crc << 32 | seq);
	x = mix64(x ^ (uint64_t)ts);
	x = mix64(x ^ trailer);
	return (uint32_t)(x ^ x >> 32);
}

static long psize, filler_end;
static uint8_t *tmpl;
static uint32_t filler_crc;

static void codec_init(long size) {
	psize = size;
	filler_end = size >= TAIL_AFTER ? size - TAIL : size;
	tmpl = calloc(1, size);
	for (long i = HDR; i < filler_end; i++)
		tmpl[i] = (uint8_t)(i * 7 + 13);
	filler_crc = crc32c(0, tmpl + HDR, filler_end - HDR);
}

static void stamp(uint8_t *b, uint32_t seq, int64_t ts) {
	uint64_t trailer = 0;
	memcpy(b, &seq, 4);
	memcpy(b + 8, &ts, 8);
	if (psize >= TAIL_AFTER) {
		trailer = seq;
		memcpy(b + psize - TAIL, &trailer, 8);
	}
	uint32_t chk = header_check(filler_crc, seq, ts, trailer);
	memcpy(b + 4, &chk, 4);
}

// verify: 0 and the sequence and stamp, or -1 and a reason in err.
static int verify(const uint8_t *b, long n, uint32_t *seq, int64_t *ts, char *err, size_t errn) {
	if (n != psize) {
		snprintf(err, errn, "corrupt message: %ld bytes, want %ld", n, psize);
		return -1;
	}
	memcpy(seq, b, 4);
	memcpy(ts, b + 8, 8);
	uint32_t crc = filler_end > HDR ? crc32c(0, b + HDR, filler_end - HDR) : 0;
	uint64_t trailer = 0;
	if (psize >= TAIL_AFTER) {
		memcpy(&trailer, b + psize - TAIL, 8);
		if (trailer != *seq) {
			snprintf(err, errn, "corrupt message: sequence %u, trailer %llu", *seq, (unsigned long long)trailer);
			return -1;
		}
	}
	uint32_t got;
	memcpy(&got, b + 4, 4);
	if (got != header_check(crc, *seq, *ts, trailer)) {
		snprintf(err, errn, "corrupt message: message %u: check mismatch", *seq);
		return -1;
	}
	return 0;
}

// ---- the control file: one 64-byte line per party ----

static uint8_t *ctl;

static _Atomic uint64_t *ctl_field(long line, int k) { return (_Atomic uint64_t *)(ctl + line * 64 + k * 8); }

static uint64_t min_received(long subs) {
	uint64_t m = UINT64_MAX;
	for (long i = 0; i < subs; i++) {
		uint64_t v = atomic_load_explicit(ctl_field(1 + i, 0), memory_order_acquire);
		m = v < m ? v : m;
	}
	return m;
}

static int open_ctl(const char *path, long subs) {
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return -1;
	ctl = mmap(NULL, (1 + subs) * 64, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return ctl == MAP_FAILED ? -1 : 0;
}

// sleep_until sleeps to an absolute CLOCK_MONOTONIC time.
static void sleep_until(int64_t t) {
	struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
	}
}

// json_escape writes s as a JSON string body.
static void json_escape(char *out, size_t n, const char *s) {
	size_t i = 0;
	for (; *s && i + 7 < n; s++) {
		if (*s == '"' || *s == '\\')
			out[i++] = '\\';
		if ((unsigned char)*s < 0x20) {
			i += snprintf(out + i, n - i, "\\u%04x", *s);
			continue;
		}
		out[i++] = *s;
	}
	out[i] = 0;
}

// ---- transports: each defines the functions below ----

static struct spec S;
static char fatal_msg[512];

// pub_open returns 0 (and fills addr for subscribers, or leaves it empty),
// or -1 with fatal_msg set.
static int pub_open(char *addr, size_t n);
// pub_buf returns the buffer of the next message and whether its contents
// are arbitrary (a loaned chunk), or NULL with fatal_msg set.
static uint8_t *pub_buf(int *fresh);
static int pub_send(void);
static int pub_flush(void);
static void pub_close(void);
static int sub_open(void);
// sub_recv returns the next message (valid until sub_release), NULL on
// timeout or stop (with *stop set), or NULL with fatal_msg set.
static const uint8_t *sub_recv(long *n, volatile int *stop);
static void sub_release(void);
static void sub_close(void);

static void fail(const char *fmt, const char *what, int err) {
	snprintf(fatal_msg, sizeof fatal_msg, fmt, what, err ? strerror(err) : "");
}

#if defined(PEER_MQ)
#include "peer_mq.h"
#elif defined(PEER_ZMQ)
#include "peer_zmq.h"
#elif defined(PEER_ICEORYX)
#include "peer_iceoryx.h"
#else
#error "define PEER_MQ, PEER_ZMQ or PEER_ICEORYX"
#endif

// ---- roles ----

static void report_pub(long sent, int64_t start, int64_t end, int64_t cpu, const char *err) {
	char e[600];
	json_escape(e, sizeof e, err);
	printf("RESULT {\"sent\":%ld,\"start_ns\":%lld,\"end_ns\":%lld,\"cpu_ns\":%lld%s%s%s}\n", sent, (long long)start,
	       (long long)end, (long long)cpu, *e ? ",\"err\":\"" : "", e, *e ? "\"" : "");
	fflush(stdout);
}

static int run_pub(void) {
	char addr[512] = "";
	if (pub_open(addr, sizeof addr) < 0) {
		report_pub(0, 0, 0, 0, fatal_msg);
		return 1;
	}
	printf("READY %s\n", addr);
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof line, stdin) || strncmp(line, "GO", 2) != 0) {
		pub_close();
		return 1;
	}
	int64_t cpu0 = cpu_self(), start = now_ns(), deadline = start + S.deadline, ts = 0;
	double interval = S.rate > 0 ? 1e9 / S.rate : 0;
	uint64_t low = 0;
	long i = 0, every = S.every > 0 ? S.every : 1;
	uint8_t *filled = NULL;
	const char *err = "";
	for (; i < S.count; i++) {
		if (interval > 0)
			sleep_until(start + (int64_t)((double)i * interval));
		if ((i & 255) == 0 && now_ns() > deadline)
			break;
		if ((uint64_t)i - low >= (uint64_t)S.window) {
			if (pub_flush() < 0) {
				err = fatal_msg;
				break;
			}
			int over = 0;
			for (int spins = 0;; spins++) {
				low = min_received(S.subs);
				if ((uint64_t)i - low < (uint64_t)S.window)
					break;
				if (now_ns() > deadline) {
					over = 1;
					break;
				}
				if (spins >= 100)
					sleep_until(now_ns() + 20000);
			}
			if (over)
				break;
		}
		int fresh = 0;
		uint8_t *buf = pub_buf(&fresh);
		if (!buf) {
			err = fatal_msg;
			break;
		}
		if (fresh || buf != filled) {
			memcpy(buf + HDR, tmpl + HDR, filler_end - HDR);
			if (!fresh)
				filled = buf;
		}
		if (i % every == 0)
			ts = now_ns();
		stamp(buf, (uint32_t)i, ts);
		if (pub_send() < 0 || (interval > 0 && pub_flush() < 0)) {
			err = fatal_msg;
			break;
		}
	}
	atomic_store_explicit(ctl_field(0, 0), (uint64_t)i, memory_order_release);
	pub_close();
	report_pub(i, start, now_ns(), cpu_self() - cpu0, err);
	return 0;
}

// Subscriber tally, shared with the thread that watches stdin.
static int64_t *lat;
static _Atomic long nlat, corrupt, gaps, reordered;
static _Atomic int64_t first_ts;
static volatile int stop_flag;
static _Atomic int done_flag;
static int64_t cpu0;
static char sub_err[512], first_bad[512];

// report_sub reports and ends the process, once: the receiver and the
// stdin watcher may both get here, and the first one's report must not be
// cut short by the other's exit.
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static void report_sub(int code) {
	pthread_mutex_lock(&report_mu);
	long n = atomic_load(&nlat);
	FILE *f = fopen(S.samples, "w");
	if (f) {
		fwrite(lat, 8, n, f);
		fclose(f);
	}
	char e1[600], e2[600];
	json_escape(e1, sizeof e1, sub_err);
	json_escape(e2, sizeof e2, first_bad);
	long line = 1 + S.index;
	printf("RESULT {\"received\":%llu,\"corrupt\":%ld,\"gaps\":%ld,\"reordered\":%ld,\"first_send_ns\":%lld,"
	       "\"last_recv_ns\":%llu,\"timed_n\":%llu,\"cpu_ns\":%lld,\"err\":\"%s\",\"first_err\":\"%s\"}\n",
	       (unsigned long long)atomic_load(ctl_field(line, 0)), atomic_load(&corrupt), atomic_load(&gaps),
	       atomic_load(&reordered), (long long)atomic_load(&first_ts), (unsigned long long)atomic_load(ctl_field(line, 1)),
	       (unsigned long long)atomic_load(ctl_field(line, 2)), (long long)(cpu_self() - cpu0), e1, e2);
	fflush(stdout);
	_exit(code);
}

// watch_stdin: on STOP or end of input, let the receiver stop, give it
// half a second, and report what was counted.
static void *watch_stdin(void *arg) {
	(void)arg;
	char line[64];
	while (fgets(line, sizeof line, stdin) && strncmp(line, "STOP", 4) != 0) {
	}
	stop_flag = 1;
	for (int i = 0; i < 50 && !atomic_load(&done_flag); i++)
		usleep(10000);
	report_sub(0);
	return NULL;
}

static int run_sub(void) {
	cpu0 = cpu_self();
	long every = S.every > 0 ? S.every : 1;
	lat = calloc(S.count / every + 2, 8);
	if (sub_open() < 0) {
		snprintf(sub_err, sizeof sub_err, "subscriber: %s", fatal_msg);
		report_sub(1);
	}
	printf("READY\n");
	fflush(stdout);
	pthread_t th;
	pthread_create(&th, NULL, watch_stdin, NULL);
	long line = 1 + S.index, maxlat = S.count / every + 2;
	uint32_t next = 0;
	for (long n = 0; n < S.count;) {
		long len = 0;
		const uint8_t *msg = sub_recv(&len, &stop_flag);
		if (!msg) {
			if (stop_flag)
				break;
			if (*fatal_msg) {
				snprintf(sub_err, sizeof sub_err, "%s", fatal_msg);
				break;
			}
			continue; // a timeout: look at the stop flag again
		}
		int64_t now = 0;
		uint32_t s0 = 0;
		if (len >= 4)
			memcpy(&s0, msg, 4);
		int timed = every == 1 || n == S.count - 1 || (len >= 4 && s0 % every == 0);
		if (timed)
			now = now_ns();
		uint32_t seq;
		int64_t ts;
		char e[256];
		int bad = verify(msg, len, &seq, &ts, e, sizeof e);
		sub_release();
		if (timed && !bad) {
			if (n == 0)
				atomic_store(&first_ts, ts);
			long k = atomic_load_explicit(&nlat, memory_order_relaxed);
			if (k < maxlat) {
				lat[k] = now - ts;
				atomic_store_explicit(&nlat, k + 1, memory_order_release);
			}
			atomic_store_explicit(ctl_field(line, 1), (uint64_t)now, memory_order_release);
			atomic_store_explicit(ctl_field(line, 2), (uint64_t)(n + 1), memory_order_release);
		}
		if (bad) {
			if (!atomic_fetch_add(&corrupt, 1))
				snprintf(first_bad, sizeof first_bad, "%s", e);
		} else if (seq > next) {
			atomic_fetch_add(&gaps, seq - next);
			next = seq + 1;
		} else if (seq < next) {
			atomic_fetch_add(&reordered, 1);
		} else {
			next = seq + 1;
		}
		n++;
		atomic_store_explicit(ctl_field(line, 0), (uint64_t)n, memory_order_release);
	}
	sub_close();
	atomic_store(&done_flag, 1);
	report_sub(0);
	return 0;
}

int main(void) {
	const char *j = getenv("SHIMMY_BENCH_CHILD");
	if (!j) {
		fprintf(stderr, "peer: run by shimmy-bench only (SHIMMY_BENCH_CHILD is not set)\n");
		return 2;
	}
	jstr(j, "role", S.role, sizeof S.role);
	jstr(j, "system", S.system, sizeof S.system);
	jstr(j, "addr", S.addr, sizeof S.addr);
	jstr(j, "topic", S.topic, sizeof S.topic);
	jstr(j, "ctl", S.ctl, sizeof S.ctl);
	jstr(j, "samples", S.samples, sizeof S.samples);
	S.size = (long)jnum(j, "size");
	S.count = (long)jnum(j, "count");
	S.rate = jnum(j, "rate");
	S.deadline = (int64_t)jnum(j, "deadline");
	S.window = (long)jnum(j, "window");
	S.subs = (long)jnum(j, "subs");
	S.index = (long)jnum(j, "index");
	S.every = (long)jnum(j, "every");
	size_t sl = strlen(S.system);
	S.busy = sl > 5 && strcmp(S.system + sl - 5, "-busy") == 0;
	crc_init();
	if (S.size < HDR || open_ctl(S.ctl, S.subs) < 0) {
		printf("RESULT {\"err\":\"bad spec or control file %s\"}\n", S.ctl);
		return 1;
	}
	codec_init(S.size);
	return strcmp(S.role, "pub") == 0 ? run_pub() : run_sub();
}
