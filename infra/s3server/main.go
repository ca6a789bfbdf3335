// The local stack's S3-compatible server: gofakes3's S3 HTTP protocol (routing, XML, multipart
// uploads, ranges) over a store of our own that keeps objects on disk, so that a stack restart
// keeps every artifact the Temporal histories point at.
//
//	s3server -host 127.0.0.1 -port 9000 -dir .data/s3 -bucket valuedrift
//
// Listens on loopback only and checks no signatures: it is a development server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on (loopback: the server checks no credentials)")
	port := flag.Int("port", 9000, "port to listen on")
	dir := flag.String("dir", "", "folder that holds the buckets (created if missing)")
	bucket := flag.String("bucket", "", "a bucket to create at start when it does not exist (optional)")
	buildID := flag.String("build-id", "", "sent back in every response's X-Valuedrift-S3server header, so that a launcher can tell an outdated server")
	flag.Parse()
	if *dir == "" {
		log.Fatal("s3server: -dir is required")
	}
	if ip := net.ParseIP(*host); ip == nil || !ip.IsLoopback() {
		log.Fatalf("s3server: -host %q is not a loopback address; this server has no authentication", *host)
	}

	store, err := OpenStore(*dir)
	if err != nil {
		log.Fatalf("s3server: %v", err)
	}
	if *bucket != "" {
		if err := store.CreateBucket(*bucket); err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
			log.Fatalf("s3server: creating bucket %s: %v", *bucket, err)
		}
	}

	faker := gofakes3.New(store,
		gofakes3.WithLogger(gofakes3.GlobalLog(gofakes3.LogErr, gofakes3.LogWarn)),
		// Clients sign with the local stack's fixed key pair; the clock skew check would only
		// refuse a request after a suspend/resume.
		gofakes3.WithTimeSkewLimit(0),
	)
	server := &http.Server{
		Addr:              net.JoinHostPort(*host, fmt.Sprint(*port)),
		Handler:           withBuildID(*buildID, decodeAwsChunked(faker.Server())),
		ReadHeaderTimeout: 30 * time.Second,
	}

	// SIGTERM (the stack's stop): finish the requests in flight, then exit.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		sig := <-stop
		log.Printf("s3server: %v: finishing requests in flight", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
		close(done)
	}()

	log.Printf("s3server: listening on http://%s, objects in %s", server.Addr, store.Root())
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("s3server: %v", err)
	}
	<-done
	log.Printf("s3server: stopped")
}

func withBuildID(id string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Valuedrift-S3server", id)
		next.ServeHTTP(w, r)
	})
}
