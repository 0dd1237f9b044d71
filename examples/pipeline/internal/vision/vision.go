// Package vision is what the pipeline's programs (camera, worker, sink)
// agree on: the binary layout of a frame on the stream channel and of a
// result on the pubsub channel, the synthetic image, the processing (a
// luminance histogram) and the text commands and reports of the control
// channel. All integers are little-endian. A message is checked before it
// is used: any member of a channel can write any byte of it.
package vision

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shimmy-dev/shimmy/channel"
)

// ErrBadMessage is returned for a message that is not a well-formed frame
// or result (wrong magic, size or checksum).
var ErrBadMessage = errors.New("vision: bad message")

// A frame: its header, then Width*Height bytes of 8-bit grey pixels.
//
//	 0 magic "SHFR"   4 run      8 seq (0..total-1)   16 total
//	24 sent (ns, the camera's wall clock, when published)
//	32 width         36 height  40 CRC-32C of the pixels   44 reserved
const (
	frameMagic     = 0x52464853 // "SHFR"
	FrameHeaderLen = 48
)

// A result: the frame's identity, what the worker computed, the worker's
// name and a CRC-32C of everything before it.
//
//	 0 magic "SHRS"   4 run      8 seq   16 total   24 sent (the frame's)
//	32 processed (ns, the worker's wall clock)   40 flags   44 pixels
//	48 histogram: 256 counts of 4 bytes   1072 worker name, 32 bytes, NUL padded
//	1104 CRC-32C of bytes 0..1103
const (
	resultMagic = 0x53524853 // "SHRS"
	ResultLen   = 1108
	nameLen     = 32
	// FlagFrameOK says the frame's pixels matched its checksum.
	FlagFrameOK = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is a frame's header.
type Frame struct {
	Run           uint32
	Seq, Total    uint64
	Sent          int64 // Unix ns
	Width, Height uint32
	CRC           uint32
}

// FrameLen is the size of a width x height frame message.
func FrameLen(width, height int) int { return FrameHeaderLen + width*height }

// Fill writes frame f into buf (FrameLen bytes): a synthetic image that
// differs from frame to frame (a gradient that moves with seq, and noise),
// its checksum, and the header with Sent set to now. It returns f as
// written.
func Fill(buf []byte, f Frame) Frame {
	px := buf[FrameHeaderLen : FrameHeaderLen+int(f.Width*f.Height)]
	x := f.Seq*0x9E3779B97F4A7C15 + uint64(f.Run) + 1 // xorshift64 state, never 0 in practice
	w, i := int(f.Width), 0
	for row := 0; row < int(f.Height); row++ {
		for col := 0; col < w; col++ {
			if i%8 == 0 {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
			px[i] = byte(col+row+int(f.Seq)) + byte(x>>(8*(i%8)))&0x1f
			i++
		}
	}
	f.CRC = crc32.Checksum(px, castagnoli)
	f.Sent = time.Now().UnixNano()
	le := binary.LittleEndian
	le.PutUint32(buf[0:], frameMagic)
	le.PutUint32(buf[4:], f.Run)
	le.PutUint64(buf[8:], f.Seq)
	le.PutUint64(buf[16:], f.Total)
	le.PutUint64(buf[24:], uint64(f.Sent))
	le.PutUint32(buf[32:], f.Width)
	le.PutUint32(buf[36:], f.Height)
	le.PutUint32(buf[40:], f.CRC)
	le.PutUint32(buf[44:], 0)
	return f
}

// ParseFrame checks a frame message's header and size and returns the
// header and the pixels (within msg). It does not check the pixels'
// checksum: Process does, as it reads them anyway.
func ParseFrame(msg []byte) (Frame, []byte, error) {
	le := binary.LittleEndian
	if len(msg) < FrameHeaderLen || le.Uint32(msg) != frameMagic {
		return Frame{}, nil, fmt.Errorf("%w: not a frame (%d bytes)", ErrBadMessage, len(msg))
	}
	f := Frame{
		Run: le.Uint32(msg[4:]), Seq: le.Uint64(msg[8:]), Total: le.Uint64(msg[16:]),
		Sent: int64(le.Uint64(msg[24:])), Width: le.Uint32(msg[32:]), Height: le.Uint32(msg[36:]),
		CRC: le.Uint32(msg[40:]),
	}
	if uint64(f.Width)*uint64(f.Height) != uint64(len(msg)-FrameHeaderLen) || f.Seq >= f.Total {
		return Frame{}, nil, fmt.Errorf("%w: frame %d/%d of %dx%d in %d bytes", ErrBadMessage, f.Seq, f.Total, f.Width, f.Height, len(msg))
	}
	return f, msg[FrameHeaderLen:], nil
}

// Result is what a worker made of a frame.
type Result struct {
	Run        uint32
	Seq, Total uint64
	Sent       int64 // the frame's
	Processed  int64 // Unix ns
	FrameOK    bool  // the pixels matched the frame's checksum
	Pixels     uint32
	Histogram  [256]uint32
	Worker     string // at most 32 bytes
}

// Process checks a frame's pixels against its checksum and computes their
// histogram: the work each worker does.
func Process(f Frame, px []byte, worker string) Result {
	r := Result{Run: f.Run, Seq: f.Seq, Total: f.Total, Sent: f.Sent, Pixels: uint32(len(px)), Worker: worker}
	r.FrameOK = crc32.Checksum(px, castagnoli) == f.CRC
	for _, p := range px {
		r.Histogram[p]++
	}
	r.Processed = time.Now().UnixNano()
	return r
}

// AppendResult appends r's message (ResultLen bytes) to b.
func AppendResult(b []byte, r Result) []byte {
	le := binary.LittleEndian
	start := len(b)
	b = le.AppendUint32(b, resultMagic)
	b = le.AppendUint32(b, r.Run)
	b = le.AppendUint64(b, r.Seq)
	b = le.AppendUint64(b, r.Total)
	b = le.AppendUint64(b, uint64(r.Sent))
	b = le.AppendUint64(b, uint64(r.Processed))
	var flags uint32
	if r.FrameOK {
		flags |= FlagFrameOK
	}
	b = le.AppendUint32(b, flags)
	b = le.AppendUint32(b, r.Pixels)
	for _, c := range r.Histogram {
		b = le.AppendUint32(b, c)
	}
	var name [nameLen]byte
	copy(name[:], r.Worker)
	b = append(b, name[:]...)
	return le.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// ParseResult checks a result message (size, magic, checksum, and that the
// histogram counts every pixel) and decodes it.
func ParseResult(msg []byte) (Result, error) {
	le := binary.LittleEndian
	if len(msg) != ResultLen || le.Uint32(msg) != resultMagic {
		return Result{}, fmt.Errorf("%w: not a result (%d bytes)", ErrBadMessage, len(msg))
	}
	if crc32.Checksum(msg[:ResultLen-4], castagnoli) != le.Uint32(msg[ResultLen-4:]) {
		return Result{}, fmt.Errorf("%w: result checksum", ErrBadMessage)
	}
	r := Result{
		Run: le.Uint32(msg[4:]), Seq: le.Uint64(msg[8:]), Total: le.Uint64(msg[16:]),
		Sent: int64(le.Uint64(msg[24:])), Processed: int64(le.Uint64(msg[32:])),
		FrameOK: le.Uint32(msg[40:])&FlagFrameOK != 0, Pixels: le.Uint32(msg[44:]),
	}
	var sum uint64
	for i := range r.Histogram {
		r.Histogram[i] = le.Uint32(msg[48+4*i:])
		sum += uint64(r.Histogram[i])
	}
	r.Worker = strings.TrimRight(string(msg[1072:1072+nameLen]), "\x00")
	if sum != uint64(r.Pixels) || r.Seq >= r.Total {
		return Result{}, fmt.Errorf("%w: result of frame %d/%d counts %d of %d pixels", ErrBadMessage, r.Seq, r.Total, sum, r.Pixels)
	}
	return r, nil
}

// Command is a control line that starts a run: "run <id> <frames> <fps>"
// (fps 0: as fast as the pipeline goes). The camera takes them in order.
type Command struct {
	Run    uint32
	Frames uint64
	FPS    float64
}

// ParseCommand parses a control line; ok is false for lines that are not
// commands (reports, or anything else someone wrote).
func ParseCommand(line string) (c Command, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "run" {
		return Command{}, false, nil
	}
	if len(f) != 4 {
		return Command{}, true, fmt.Errorf("want \"run <id> <frames> <fps>\", got %q", line)
	}
	run, err1 := strconv.ParseUint(f[1], 10, 32)
	frames, err2 := strconv.ParseUint(f[2], 10, 64)
	fps, err3 := strconv.ParseFloat(f[3], 64)
	if err := errors.Join(err1, err2, err3); err != nil || frames == 0 || fps < 0 {
		return Command{}, true, fmt.Errorf("bad command %q: %v", line, err)
	}
	return Command{Run: uint32(run), Frames: frames, FPS: fps}, true, nil
}

// Env returns the environment variable name if set, else def: the flags'
// defaults come from the variables the webhook gives a pod
// (SHIMMY_CHANNEL_<NAME>).
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Open maps the ring of each channel directory (through the mount, once:
// an agent restart does not disturb the mappings). closeAll releases this
// process's members and unmaps them.
func Open(dirs ...string) (rings []*channel.Ring, closeAll func(), err error) {
	closeAll = func() {
		for _, r := range rings {
			r.Close()
		}
	}
	for _, d := range dirs {
		r, err := channel.MapFile(filepath.Join(d, "ring"))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		rings = append(rings, r)
	}
	return rings, closeAll, nil
}
