package channel

// AppendEnd says why AppendBatch stopped.
type AppendEnd int

const (
	// AppendEmpty: no message is ready.
	AppendEmpty AppendEnd = iota
	// AppendFull: a message is ready, one Skip did not name, and the
	// buffer had reached the limit: it is left for the next read.
	AppendFull
	// AppendSkipped: Skip named the message just passed over; the caller
	// may move on further (SkipTo) before it reads on.
	AppendSkipped
)

// AppendOptions configure AppendBatch.
type AppendOptions struct {
	// Limit: no message is appended once the buffer holds Limit bytes
	// or more (the first always is, whatever its size, below it).
	Limit int
	// Skip, if set, is asked first about each message, with the member
	// slot its frame names (PublisherSlot) and the position after it;
	// true passes the message over uncopied and ends the batch
	// (AppendSkipped). It may be asked about a message that turns out to
	// be overwritten (overwrite policy), whose answer is then dropped.
	Skip func(slot uint32, after Position) bool
	// Put, if set, appends msg, the message at position at, to buf with
	// whatever framing the caller wants and returns buf; by default the
	// bytes alone are appended. msg is valid only during the call, and
	// what Put appends is cut off again if the message turns out to be
	// overwritten or this subscriber evicted.
	Put func(buf, msg []byte, at Position) []byte
}

// Appended says what AppendBatch read.
type Appended struct {
	Msgs  int // messages appended
	Bytes int // their bytes, without Put's framing
	End   AppendEnd
}

// appendMaxLooks bounds the frames one AppendBatch looks at: empty
// messages do not fill a buffer, and a reader that a hostile client's
// Tail keeps sending back (overwrite: resync) would read them for ever.
const appendMaxLooks = 1 << 14

// AppendBatch appends the ready messages to buf in order, each read once
// (Skip's question and the copy from one look at its frame), until none
// is ready, buf reaches o.Limit, Skip names one, or it has looked at
// 16384 frames. It never waits. The
// mirror's exporter builds a batch this way, passing over what its own
// importer wrote. Errors are AppendNext's (ErrEvicted, ErrCorrupt, ...),
// for the message that failed: buf holds the messages read before it.
func (s *Subscriber) AppendBatch(buf []byte, o AppendOptions) ([]byte, Appended, error) {
	var b Appended
	member := false // check asked after the last copy: no need to ask again
	for looks := 0; ; looks++ {
		if looks == appendMaxLooks {
			b.End = AppendFull
			return buf, b, nil
		}
		var msg []byte
		var err error
		if member {
			msg, err = s.look(false)
		} else {
			msg, err = s.peek(false)
		}
		member = false
		if err == ErrWouldBlock {
			return buf, b, nil
		}
		if err != nil {
			return buf, b, err
		}
		at, slot := s.cur, s.PublisherSlot()
		if o.Skip != nil && o.Skip(slot, s.after()) {
			if !s.unlapped() { // the slot was read from an overwritten frame
				s.viewed = 0
				s.resync()
				continue
			}
			s.Done()
			b.End = AppendSkipped
			return buf, b, nil
		}
		if len(buf) >= o.Limit {
			s.viewed = 0
			b.End = AppendFull
			return buf, b, nil
		}
		n := len(buf)
		if o.Put != nil {
			buf = o.Put(buf, msg, at)
		} else {
			buf = append(buf, msg...)
		}
		if err := s.check(); err != nil {
			return buf[:n], b, err
		}
		member = s.r.cfg.Policy == PolicyBlock
		if !s.unlapped() {
			buf = buf[:n]
			s.viewed = 0
			s.resync()
			continue
		}
		s.Done()
		b.Msgs++
		b.Bytes += len(msg)
	}
}
