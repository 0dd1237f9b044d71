package harness

import "testing"

// What the harness itself costs per message, at the smallest size: the
// clock read (every message at a fixed rate, every 16th at saturation),
// the publisher's stamp and the subscriber's check.

func BenchmarkNanotime(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = nanotime()
	}
}

func BenchmarkStamp(b *testing.B) {
	c, _ := NewCodec(MinSize)
	buf := make([]byte, MinSize)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Encode(buf, uint32(i), 5)
	}
}

func BenchmarkVerify(b *testing.B) {
	c, _ := NewCodec(MinSize)
	buf := make([]byte, MinSize)
	c.Encode(buf, 1, 5)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := c.Verify(buf); err != nil {
			b.Fatal(err)
		}
	}
}
