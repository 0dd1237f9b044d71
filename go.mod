module github.com/shimmy-dev/shimmy

go 1.26.8

require golang.org/x/sys v0.50.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
)
