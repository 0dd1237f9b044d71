package tcp

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/shimmy-dev/shimmy/rdma"
	"github.com/shimmy-dev/shimmy/rdma/certs"
)

// Loopback throughput of a link against the same bytes over raw TCP and
// over TLS 1.3 alone, measured in one run:
//
//	go test -run '^$' -bench Loopback -benchtime 2s ./rdma/tcp/
//
// 16B: 16-byte messages, 256 to a batch (the link: 256 writes of one Post,
// the last with an immediate; "16B-range": the batch as one 4 KiB write,
// as the mirror sends a ring range). 100KiB: one message per write, with
// an immediate. The baselines send the payload bytes only, without framing.
const benchBatch = 256

type benchCase struct {
	name string
	size int  // message bytes
	rng  bool // the link sends a batch as one write
}

var benchCases = []benchCase{{"16B", 16, false}, {"16B-range", 16, true}, {"100KiB", 100 << 10, false}}

func BenchmarkLoopback(b *testing.B) {
	for _, bc := range benchCases {
		b.Run("link/"+bc.name, func(b *testing.B) { benchLink(b, bc) })
		if bc.rng {
			continue // the baselines of 16B already send whole batches
		}
		b.Run("tls/"+bc.name, func(b *testing.B) { benchStream(b, bc, true) })
		b.Run("tcp/"+bc.name, func(b *testing.B) { benchStream(b, bc, false) })
	}
}

// batchOf is how many messages go in one write call or Post.
func batchOf(size int) int {
	if size > 4096 {
		return 1
	}
	return benchBatch
}

func report(b *testing.B, size, msgs int, start time.Time) {
	sec := time.Since(start).Seconds()
	b.ReportMetric(float64(msgs)/sec, "msgs/s")
	b.ReportMetric(float64(msgs*size)/sec/1e9, "GB/s")
}

func benchLink(b *testing.B, bc benchCase) {
	a, r := linkPair(b, func(o *rdma.Options) { o.CQDepth = 1 << 16 })
	batch := batchOf(bc.size)
	span := batch * bc.size
	src, dst := make([]byte, span), make([]byte, span)
	local, _ := a.Register(src)
	remote, _ := r.Register(dst)
	key := remote.Key()
	var ws []rdma.Write
	if bc.rng {
		ws = []rdma.Write{{Local: local, Len: uint32(span), Remote: key, WithImm: true}}
	} else {
		for i := 0; i < batch; i++ {
			off := uint64(i * bc.size)
			ws = append(ws, rdma.Write{Local: local, LocalOff: off, Len: uint32(bc.size), Remote: key, RemoteOff: off})
		}
		ws[batch-1].WithImm = true
	}
	posts := (b.N + batch - 1) / batch
	b.SetBytes(int64(bc.size))
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := 0; i < posts; i++ {
			if err := a.Post(ws...); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	cs := make([]rdma.Completion, 256)
	for got := 0; got < posts; {
		n, err := r.Wait(context.Background(), cs)
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	report(b, bc.size, posts*batch, start)
}

// benchStream sends the same payload bytes over a plain or TLS TCP
// connection on loopback.
func benchStream(b *testing.B, bc benchCase, useTLS bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var srvCfg, cliCfg *tls.Config
	if useTLS {
		ca, _ := certs.NewCA(certs.Options{Name: "ca"})
		node, _ := ca.Issue(certs.Options{Name: "n"})
		srvCfg, cliCfg = tlsConfigs(rdma.Options{Certificate: node.TLS(), CA: ca.Pool()})
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		if useTLS {
			c = tls.Server(c, srvCfg)
		}
		accepted <- c
	}()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if useTLS {
		w = tls.Client(w, cliCfg)
	}
	defer w.Close()
	r := <-accepted
	defer r.Close()
	batch := batchOf(bc.size)
	buf := make([]byte, batch*bc.size)
	writes := (b.N + batch - 1) / batch
	b.SetBytes(int64(bc.size))
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := 0; i < writes; i++ {
			if _, err := w.Write(buf); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	rbuf := make([]byte, 256<<10)
	for left := writes * len(buf); left > 0; {
		n, err := r.Read(rbuf[:min(len(rbuf), left)])
		if err != nil && err != io.EOF {
			b.Fatal(err)
		}
		left -= n
	}
	report(b, bc.size, writes*batch, start)
}
