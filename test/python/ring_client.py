#!/usr/bin/env python3
"""Reference Shimmy ring client in plain Python (mmap + struct + os/sys/time).

Written from docs/ring-format.md alone, to show that the document is enough
to speak the ring ABI; channel/python_test.go runs it against the Go client.

usage:
  ring_client.py sub RING [-n N] [--timeout SEC] [--oldest]
      join as a subscriber of a pubsub ring and print N messages (default:
      until the timeout), hex-encoded, one per line. The first line is
      "# joined slot S"; a last line "# lost L" reports overwrite losses.
  ring_client.py pub RING [--hex] [--queue Q] [--timeout SEC] [MSG ...]
      join as a publisher and publish each MSG (or each line of stdin when no
      MSG is given; --hex decodes them from hex, so an empty line is an empty
      message). Prints "# joined slot S" first and "# published N" last.

Limits (docs/ring-format.md, section 15): Python has no compare-and-swap, so
a publisher run by this script must be the ONLY publisher of its queue, and
joins are not atomic (this script scans slots from the last one down and
re-checks its claim; still, join Python clients one at a time). Python cannot
sleep on a futex either: the script polls, and its peers, whose sleeps are
bounded by their safety timeout, notice its progress without a wake-up. Shared words are
read and written through memoryview casts, which use single aligned 4- and
8-byte accesses; on x86-64 those are also ordered as the protocol needs.
Other architectures need fences Python cannot issue, so the script refuses
to run there.
"""

import mmap
import os
import struct
import sys
import time

# --- ABI constants (docs/ring-format.md) ---------------------------------

MAGIC = 0x474E49524D494853  # b"SHIMRING" little-endian
VERSION = 2         # written by the agent; 1 is read too (it has no gap frames)
OLDEST_VERSION = 1
HEADER_LEN = 4096
INDEX_CHUNKS = 64
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 30
MAX_MEMBERS = 4096
MIN_LEASE = 10_000_000
MAX_LEASE = 3600 * 1_000_000_000

# descriptor
OFF_MAGIC, OFF_VERSION, OFF_HEADER_LEN = 0, 8, 12
OFF_TYPE, OFF_POLICY, OFF_CAPACITY = 16, 20, 24
OFF_MAX_MESSAGE, OFF_MEMBER_SLOTS, OFF_EPOCH = 32, 36, 40
OFF_MEMBERS_OFFSET, OFF_LEASE, OFF_QUEUE_COUNT = 48, 56, 64
OFF_INDEX_CHUNKS, OFF_FILE_SIZE, OFF_DATA_OFFSET = 68, 72, 80
OFF_QUEUES, QUEUE_HEADER_LEN = 1024, 1024

# queue header (relative)
Q_TAIL, Q_HEAD, Q_LIMIT, Q_RELEASE = 0, 64, 128, 192
Q_DATA_FUTEX, Q_DATA_WAITERS = 256, 260
Q_SPACE_FUTEX, Q_SPACE_WAITERS = 320, 324
Q_REAPED, Q_INDEX = 384, 448
Q_RESERVE = 964     # u32 slot+1 of a Reserver publisher (block pubsub), 0: none

# member slot (relative)
SLOT_LEN = 64
M_STATE, M_ROLE, M_PID, M_GEN = 0, 4, 8, 12
M_LEASE, M_CURSOR, M_PENDING, M_PENDING_LEN = 16, 24, 32, 40
M_LOST, M_COUNT = 48, 56

# frame (relative)
FRAME_HEADER = 16
F_SEQ, F_SLOT = 8, 12
FLAG_PADDING = 1 << 31
FLAG_CONSUMED = 1 << 30
LENGTH_MASK = (1 << 30) - 1
SLOT_GAP = 0xFFFE   # a gap frame: padding of length 0 standing for messages lost upstream

TYPE_PUBSUB, TYPE_STREAM = 1, 2
POLICY_BLOCK, POLICY_OVERWRITE = 1, 2
FREE, INIT, ACTIVE, DEAD = 0, 1, 2, 3
ROLE_PUBLISHER, ROLE_SUBSCRIBER = 1, 2

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1
HALF = 1 << 31


class RingError(Exception):
    pass


class Evicted(RingError):
    pass


def align16(n):
    return (n + 15) & ~15


def mkpos(seq, units):
    return ((seq & M32) << 32) | (units & M32)


def seq_of(p):
    return p >> 32


def units_of(p):
    return p & M32


def udist(a, b):
    """How far a is ahead of b, modulo 2^32."""
    return (a - b) & M32


def monotonic_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def members_len(slots):
    return (slots * SLOT_LEN + 4095) & ~4095


class Ring:
    """A validated mapping of a ring file. The geometry is copied into
    Python values once and never re-read (section 2)."""

    def __init__(self, path):
        if os.uname().machine not in ("x86_64", "amd64") or sys.byteorder != "little":
            raise RingError("this client relies on x86-64 ordering; see docs/ring-format.md section 15")
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_LEN or size % 8:
                raise RingError(f"{path}: {size} bytes is not a ring")
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # Single aligned loads and stores of 8 and 4 bytes (rule 1).
        self.w64 = memoryview(self.mm).cast("Q")
        self.w32 = memoryview(self.mm).cast("I")
        self._validate(size)

    def close(self):
        self.w64.release()
        self.w32.release()
        self.mm.close()

    # word access
    def u64(self, off):
        return self.w64[off >> 3]

    def set64(self, off, v):
        self.w64[off >> 3] = v & M64

    def u32(self, off):
        return self.w32[off >> 2]

    def set32(self, off, v):
        self.w32[off >> 2] = v & M32

    def _validate(self, size):
        if self.u64(OFF_MAGIC) != MAGIC:
            raise RingError("bad magic: not a shimmy ring")
        version = self.u32(OFF_VERSION)
        if not OLDEST_VERSION <= version <= VERSION:
            raise RingError(f"ring has ABI version {version}, this client speaks {OLDEST_VERSION} to {VERSION}")
        self.version = version
        (typ, policy, capacity, max_message, slots, epoch, members_off, lease,
         queues, chunks, file_size, data_off) = struct.unpack_from("<IIQIIQQQIIQQ", self.mm, OFF_TYPE)
        header_len = self.u32(OFF_HEADER_LEN)
        checks = [
            (lease <= MAX_LEASE, f"lease {lease} ns"),
            (typ in (TYPE_PUBSUB, TYPE_STREAM), f"type {typ}"),
            (policy in (POLICY_BLOCK, POLICY_OVERWRITE), f"policy {policy}"),
            (typ != TYPE_STREAM or policy == POLICY_BLOCK, "stream ring with overwrite policy"),
            (MIN_CAPACITY <= capacity <= MAX_CAPACITY and capacity & (capacity - 1) == 0, f"capacity {capacity}"),
            (max_message <= capacity // 4 - FRAME_HEADER, f"max message {max_message}"),
            (1 <= slots <= MAX_MEMBERS, f"member slots {slots}"),
            (lease >= MIN_LEASE, f"lease {lease} ns"),
            (header_len == HEADER_LEN and members_off == HEADER_LEN and chunks == INDEX_CHUNKS, "header geometry"),
            (queues == (2 if typ == TYPE_STREAM else 1), f"{queues} queues for type {typ}"),
            (data_off == HEADER_LEN + members_len(slots), f"data offset {data_off}"),
            (file_size == HEADER_LEN + members_len(slots) + queues * capacity, f"file size field {file_size}"),
            (size >= file_size, f"file is {size} bytes, ring needs {file_size}"),
        ]
        for ok, what in checks:
            if not ok:
                raise RingError(f"corrupt ring header: {what}")
        self.type, self.policy, self.capacity = typ, policy, capacity
        self.max_message, self.slots, self.epoch = max_message, slots, epoch
        self.lease, self.queues, self.data_off = lease, queues, data_off
        self.mask = capacity - 1
        self.cap_units = capacity >> 4
        self.chunk_units = self.cap_units // INDEX_CHUNKS

    # geometry helpers
    def qh(self, q):
        return OFF_QUEUES + q * QUEUE_HEADER_LEN

    def data(self, q):
        return self.data_off + q * self.capacity

    def offset(self, units):
        return (units << 4) & self.mask

    def slot_off(self, i):
        return HEADER_LEN + i * SLOT_LEN

    def expired(self, base, now):
        st = self.u32(base + M_STATE)
        lease = self.u64(base + M_LEASE)
        return st in (INIT, ACTIVE) and lease != 0 and now - lease > self.lease

    def oldest(self, q, tail):
        """Section 7: the oldest record not reclaimed by claims up to tail."""
        cu = self.chunk_units
        qh = self.qh(q)
        low = (units_of(tail) - self.cap_units) & M32
        b = (((low + cu - 1) & M32) // cu * cu) & M32  # u32 arithmetic, as in Go
        near = 2 * (align16(FRAME_HEADER + self.max_message) >> 4)
        for _ in range(INDEX_CHUNKS):
            e = self.u64(qh + Q_INDEX + 8 * ((b // cu) % INDEX_CHUNKS))
            tb = udist(units_of(tail), b)
            if (udist(units_of(e), b) <= tb and tb <= self.cap_units and udist(units_of(e), b) <= near
                    and udist(seq_of(tail), seq_of(e)) < HALF):
                return e
            b = (b + cu) & M32
            if udist(units_of(tail), b) > self.cap_units:
                break
        return tail

    def wake(self, q, word, waiters):
        # No futex from Python: bump the word so a peer about to sleep does
        # not; sleepers wake within their safety timeout anyway (section 11).
        qh = self.qh(q)
        if self.u32(qh + waiters) != 0:
            self.set32(qh + word, self.u32(qh + word) + 1)


class Member:
    """A member slot taken without compare-and-swap (section 15)."""

    def __init__(self, ring, role, q, cursor):
        self.ring, self.q = ring, q
        pid = os.getpid()
        for i in reversed(range(ring.slots)):
            base = ring.slot_off(i)
            if ring.u32(base + M_STATE) != FREE:
                continue
            ring.set32(base + M_STATE, INIT)
            gen = (ring.u32(base + M_GEN) + 1) & M32
            ring.set32(base + M_GEN, gen)
            ring.set64(base + M_LEASE, monotonic_ns())
            ring.set32(base + M_ROLE, role | q << 8)
            ring.set32(base + M_PID, pid)
            ring.set64(base + M_CURSOR, cursor)
            ring.set64(base + M_PENDING_LEN, 0)
            ring.set64(base + M_PENDING, 0)
            ring.set64(base + M_LOST, 0)
            ring.set64(base + M_COUNT, 0)
            ring.set32(base + M_STATE, ACTIVE)
            # A CAS-less join can collide with a concurrent joiner: give it
            # a moment and check that the slot still carries our stamp.
            time.sleep(0.002)
            if (ring.u32(base + M_GEN) == gen and ring.u32(base + M_PID) == pid
                    and ring.u32(base + M_STATE) == ACTIVE and ring.u32(base + M_ROLE) == role | q << 8):
                self.idx, self.base, self.gen = i, base, gen
                self.last_beat = 0
                return
        raise RingError(f"no free member slot of {ring.slots}")

    def alive(self):
        r = self.ring
        if r.u32(self.base + M_STATE) != ACTIVE or r.u32(self.base + M_GEN) != self.gen:
            raise Evicted(f"member slot {self.idx} was reaped (lease expired)")

    def beat(self):
        """Refresh the lease, at most every millisecond; check eviction."""
        now = monotonic_ns()
        if now - self.last_beat > 1_000_000:
            self.alive()
            self.ring.set64(self.base + M_LEASE, now)
            self.last_beat = now

    def set(self, field, v):
        self.ring.set64(self.base + field, v)

    def add(self, field, n):
        # Own slot only: no one else writes these counters.
        self.ring.set64(self.base + field, self.ring.u64(self.base + field) + n)

    def leave(self):
        r = self.ring
        if r.u32(self.base + M_GEN) == self.gen:
            r.set64(self.base + M_LEASE, 0)
            if r.u32(self.base + M_STATE) == ACTIVE:
                r.set32(self.base + M_STATE, FREE)


def poll_pause(spins):
    """Poll: a few quick retries, then short sleeps (no futex in Python)."""
    if spins < 100:
        return
    time.sleep(0.0002 if spins < 1000 else 0.001)


class Subscriber:
    def __init__(self, ring, oldest=False):
        if ring.type != TYPE_PUBSUB:
            raise RingError("stream readers need compare-and-swap on Head; not supported in Python")
        self.ring, self.q = ring, 0
        qh = ring.qh(0)
        self.m = Member(ring, ROLE_SUBSCRIBER, 0, ring.u64(qh + Q_TAIL))
        self.lost = 0
        while True:  # settle (section 10, join)
            tail = ring.u64(qh + Q_TAIL)
            c = ring.oldest(0, tail) if oldest else tail
            if ring.policy == POLICY_BLOCK:
                lim = ring.u64(qh + Q_LIMIT) & M32
                if udist(units_of(c), lim) >= HALF:
                    c = ring.oldest(0, mkpos(seq_of(tail), lim + ring.cap_units))
            self.m.set(M_CURSOR, c)
            lim = ring.u64(qh + Q_LIMIT) & M32
            if ring.policy == POLICY_OVERWRITE or udist(units_of(c), lim) < HALF:
                self.cur = c
                return

    def corrupt(self, msg):
        """The error for a ring found corrupt, unless this member was
        evicted: then its frames may have been reused as it read them
        (section 10), and alive() raises Evicted instead."""
        self.m.alive()
        return RingError(msg)

    def resync(self):
        r = self.ring
        c = r.oldest(0, r.u64(r.qh(0) + Q_TAIL))
        n = (seq_of(c) - seq_of(self.cur)) & M32
        if n >= HALF:
            n = 0  # a cursor ahead of the oldest record (a forged Seq) lost nothing
        self.lost += n
        self.m.add(M_LOST, n)
        self.cur = c
        self.m.set(M_CURSOR, c)

    def next(self, deadline):
        """Return the next message (bytes), or None at the deadline."""
        r, qh = self.ring, self.ring.qh(0)
        base = r.data(0)
        spins = 0
        while True:
            self.m.beat()
            cur = self.cur
            off = r.offset(units_of(cur))
            w = r.u64(base + off)  # commit word: loaded first (acquire on x86-64)
            if w & M32 != units_of(cur):
                d = udist(units_of(r.u64(qh + Q_TAIL)), units_of(cur))
                if d >= HALF:
                    raise self.corrupt(f"corrupt ring: cursor {units_of(cur)} is ahead of the tail")
                if d > r.cap_units and r.policy == POLICY_OVERWRITE:
                    self.resync()
                    continue
                # empty, or claimed and not committed yet: wait
                if time.monotonic() > deadline:
                    return None
                spins += 1
                poll_pause(spins)
                continue
            lf = w >> 32
            n = lf & LENGTH_MASK
            if lf & FLAG_PADDING:
                tail = r.u64(qh + Q_TAIL)
                if (n % 16 or off + FRAME_HEADER + n > r.capacity
                        or udist(units_of(tail), units_of(cur)) < (FRAME_HEADER + n) >> 4):
                    raise self.corrupt(f"corrupt ring: padding of {n} bytes at offset {off}")
                # padSeq: padding over claimed messages carries the sequence
                # after them: at most one message per 16-byte unit in a
                # version 1 ring, any forward step (below 2^31) from 2 on.
                # A gap frame's step is messages lost before the ring.
                seq = r.u32(base + off + F_SEQ)
                slot = r.u32(base + off + F_SLOT) & 0xFFFF
                # The fields are the padding's only if no claim of the next
                # lap reached it before they were loaded (section 5).
                if udist(units_of(r.u64(qh + Q_TAIL)), units_of(cur)) > r.cap_units:
                    if r.policy == POLICY_OVERWRITE:
                        self.resync()
                        continue
                    raise self.corrupt("corrupt ring: the tail lapped a block subscriber")
                k = (seq - seq_of(cur)) & M32
                bound = (FRAME_HEADER + n) >> 4 if r.version < 2 else HALF - 1
                if not 0 < k <= bound:
                    seq, k = seq_of(cur), 0
                if k and n == 0 and r.version >= 2 and slot == SLOT_GAP:
                    self.lost += k
                    self.m.add(M_LOST, k)
                self.cur = mkpos(seq, units_of(cur) + ((FRAME_HEADER + n) >> 4))
                self.m.set(M_CURSOR, self.cur)
                continue
            if n > r.max_message or off + FRAME_HEADER + n > r.capacity:
                raise self.corrupt(f"corrupt ring: frame of {n} bytes at offset {off}")
            if r.u32(base + off + F_SEQ) != seq_of(cur):
                if r.policy == POLICY_OVERWRITE and udist(units_of(r.u64(qh + Q_TAIL)), units_of(cur)) > r.cap_units:
                    self.resync()
                    continue
                raise self.corrupt(f"corrupt ring: frame at offset {off} has the wrong sequence")
            msg = bytes(r.mm[base + off + FRAME_HEADER: base + off + FRAME_HEADER + n])
            if r.policy == POLICY_OVERWRITE and udist(units_of(r.u64(qh + Q_TAIL)), units_of(cur)) > r.cap_units:
                self.resync()  # overwritten while we copied it
                continue
            self.cur = mkpos(seq_of(cur) + 1, units_of(cur) + (align16(FRAME_HEADER + n) >> 4))
            self.m.set(M_CURSOR, self.cur)  # after the copy: frees the space
            self.m.add(M_COUNT, 1)
            if r.policy == POLICY_BLOCK:
                r.wake(0, Q_SPACE_FUTEX, Q_SPACE_WAITERS)
            return msg

    def close(self):
        self.m.leave()
        self.ring.wake(0, Q_SPACE_FUTEX, Q_SPACE_WAITERS)


class Publisher:
    """The single-publisher path: Tail and commit words are plain stores,
    which is safe only while no one else publishes on the queue."""

    def __init__(self, ring, q=0):
        if not 0 <= q < ring.queues:
            raise RingError(f"queue {q} of a {ring.queues}-queue ring")
        self.ring, self.q = ring, q
        self.m = Member(ring, ROLE_PUBLISHER, q, 0)

    def limit(self, tail_units):
        """Section 9: the oldest live claim in flight and (block) the slowest
        live subscriber; store it in Limit."""
        r, q = self.ring, self.q
        now = monotonic_ns()
        lag = 0
        for i in range(r.slots):
            base = r.slot_off(i)
            if r.u32(base + M_STATE) != ACTIVE or r.expired(base, now):
                continue  # the dead do not hold us back (evicting them needs CAS)
            role = r.u32(base + M_ROLE)
            if role == ROLE_PUBLISHER | q << 8:
                if r.u64(base + M_PENDING_LEN) == 0:
                    continue
                d = udist(tail_units, units_of(r.u64(base + M_PENDING)))
            elif role == ROLE_SUBSCRIBER | q << 8 and r.policy == POLICY_BLOCK:
                d = udist(tail_units, units_of(r.u64(base + M_CURSOR)))
            else:
                continue
            if d <= r.cap_units and d > lag:
                lag = d
        lim = (tail_units - lag) & M32
        qh = r.qh(q)
        old = r.u64(qh + Q_LIMIT) & M32
        if udist(lim, old) < HALF and lim != old:
            r.set64(qh + Q_LIMIT, lim)
        return lim

    def reserved(self):
        """Section 9: a block pubsub queue whose Reserve word names a live
        publisher of it is full for this publisher. Any other non-zero value
        is void; clearing it needs a CAS, so this client leaves that to the
        agent's reaper."""
        r, q = self.ring, self.q
        if r.type != TYPE_PUBSUB or r.policy != POLICY_BLOCK:
            return False
        v = r.u32(r.qh(q) + Q_RESERVE)  # loaded once
        if v == 0 or v - 1 >= r.slots:
            return False
        base = r.slot_off(v - 1)
        return (r.u32(base + M_STATE) == ACTIVE and r.u32(base + M_ROLE) == ROLE_PUBLISHER | q << 8
                and not r.expired(base, monotonic_ns()))

    def room(self, end, tail_units):
        r, qh = self.ring, self.ring.qh(self.q)
        if r.type == TYPE_STREAM:
            return udist(end, units_of(r.u64(qh + Q_RELEASE))) <= r.cap_units
        if udist(end, r.u64(qh + Q_LIMIT) & M32) <= r.cap_units:
            return True
        return udist(end, self.limit(tail_units)) <= r.cap_units

    def index(self, t, fp, nxt):
        """Section 7: record the first record at or after each boundary crossed."""
        r, cu = self.ring, self.ring.chunk_units
        qh = r.qh(self.q)
        b = ((units_of(t) // cu + 1) * cu) & M32
        while udist(units_of(nxt), b) < HALF and udist(b, units_of(t)) <= udist(units_of(nxt), units_of(t)):
            e = fp if udist(units_of(fp), b) < HALF else nxt
            r.set64(qh + Q_INDEX + 8 * ((b // cu) % INDEX_CHUNKS), e)
            b = (b + cu) & M32

    def publish(self, msg, deadline):
        r, q = self.ring, self.q
        n = len(msg)
        if n > r.max_message:
            raise RingError(f"message of {n} bytes exceeds the maximum {r.max_message}")
        qh, base = r.qh(q), r.data(q)
        frame = align16(FRAME_HEADER + n)
        spins = 0
        while True:
            self.m.beat()
            t = r.u64(qh + Q_TAIL)
            off = r.offset(units_of(t))
            total = frame
            if off + frame > r.capacity:
                total += r.capacity - off  # padding to the end of the ring
            end = (units_of(t) + (total >> 4)) & M32
            if not self.reserved() and self.room(end, units_of(t)):
                break
            if time.monotonic() > deadline:
                raise RingError("timed out waiting for space (a subscriber is not reading)")
            spins += 1
            poll_pause(spins)
        # 1. record the claim, 2. claim (sole publisher: a plain store).
        self.m.set(M_PENDING, t)
        self.m.set(M_PENDING_LEN, total)
        nxt = mkpos(seq_of(t) + 1, end)
        r.set64(qh + Q_TAIL, nxt)
        fp = t
        if total != frame:  # 3. padding frame at the wrap, commit word last
            pad = r.capacity - off
            r.set32(base + off + F_SEQ, seq_of(t))
            r.set32(base + off + F_SLOT, 0xFFFF)
            r.set64(base + off, units_of(t) | (FLAG_PADDING | (pad - FRAME_HEADER)) << 32)
            fp = mkpos(seq_of(t), units_of(t) + (pad >> 4))
            off = 0
        self.index(t, fp, nxt)  # 4.
        # 5. fill, 6. commit word last.
        r.mm[base + off + FRAME_HEADER: base + off + FRAME_HEADER + n] = msg
        r.set32(base + off + F_SEQ, seq_of(fp))
        r.set32(base + off + F_SLOT, self.m.idx)  # slot u16 + reserved u16 (zero)
        r.set64(base + off, units_of(fp) | n << 32)
        self.m.set(M_PENDING_LEN, 0)
        self.m.add(M_COUNT, 1)
        r.wake(q, Q_DATA_FUTEX, Q_DATA_WAITERS)

    def close(self):
        self.m.leave()


def usage():
    sys.stderr.write(__doc__)
    sys.exit(2)


def main(argv):
    if len(argv) < 3 or argv[1] not in ("sub", "pub"):
        usage()
    mode, path, rest = argv[1], argv[2], argv[3:]
    count, timeout, oldest, hexin, queue, msgs = None, 30.0, False, False, 0, []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("-n", "--timeout", "--queue") and i + 1 < len(rest):
            v = rest[i + 1]
            i += 2
            if a == "-n":
                count = int(v)
            elif a == "--timeout":
                timeout = float(v)
            else:
                queue = int(v)
            continue
        if a == "--oldest":
            oldest = True
        elif a == "--hex":
            hexin = True
        elif a == "--":
            msgs.extend(rest[i + 1:])
            break
        elif a.startswith("-") and a != "-":
            usage()
        else:
            msgs.append(a)
        i += 1

    ring = Ring(path)
    out = sys.stdout
    deadline = time.monotonic() + timeout
    if mode == "sub":
        sub = Subscriber(ring, oldest)
        try:
            out.write(f"# joined slot {sub.m.idx}\n")
            out.flush()
            got = 0
            while count is None or got < count:
                msg = sub.next(deadline)
                if msg is None:
                    break
                out.write(msg.hex() + "\n")
                got += 1
            out.write(f"# lost {sub.lost}\n")
            out.flush()
            if count is not None and got < count:
                sys.stderr.write(f"ring_client: timed out after {got} of {count} messages\n")
                return 1
        finally:
            sub.close()
            ring.close()
        return 0

    pub = Publisher(ring, queue)
    try:
        out.write(f"# joined slot {pub.m.idx}\n")
        out.flush()
        source = msgs if msgs else (line.rstrip("\n") for line in sys.stdin)
        sent = 0
        for m in source:
            data = bytes.fromhex(m) if hexin else m.encode()
            pub.publish(data, deadline)
            sent += 1
        out.write(f"# published {sent}\n")
        out.flush()
    finally:
        pub.close()
        ring.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except RingError as e:
        sys.stderr.write(f"ring_client: {e}\n")
        sys.exit(1)
