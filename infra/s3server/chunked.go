package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// decodeAwsChunked turns an aws-chunked request body (what AWS SDKs send for a streaming upload
// with a signed or trailing checksum: `x-amz-content-sha256: STREAMING-...`) into the plain
// payload before gofakes3 sees it; gofakes3 itself decodes only the signed form, and only for
// PutObject, not for UploadPart. Trailing checksums are read past, not verified (the project
// verifies every artifact's sha256 itself when it reads it back).
func decodeAwsChunked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := r.Header.Get("X-Amz-Content-Sha256")
		encodings := splitList(r.Header.Get("Content-Encoding"))
		chunked := strings.HasPrefix(mode, "STREAMING-")
		rest := encodings[:0]
		for _, e := range encodings {
			if strings.EqualFold(e, "aws-chunked") {
				chunked = true
			} else {
				rest = append(rest, e)
			}
		}
		if !chunked {
			next.ServeHTTP(w, r)
			return
		}
		decoded, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
		if err != nil || decoded < 0 {
			http.Error(w, "aws-chunked body without a valid x-amz-decoded-content-length", http.StatusBadRequest)
			return
		}
		r.Body = &chunkedBody{src: bufio.NewReader(r.Body), closer: r.Body, want: decoded}
		r.ContentLength = decoded
		r.Header.Set("Content-Length", strconv.FormatInt(decoded, 10))
		r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		r.Header.Del("X-Amz-Decoded-Content-Length")
		r.Header.Del("X-Amz-Trailer")
		if len(rest) == 0 {
			r.Header.Del("Content-Encoding")
		} else {
			r.Header.Set("Content-Encoding", strings.Join(rest, ","))
		}
		next.ServeHTTP(w, r)
	})
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// chunkedBody reads `<hex size>[;ext]\r\n<bytes>\r\n ... 0[;ext]\r\n[trailers]\r\n`.
type chunkedBody struct {
	src     *bufio.Reader
	closer  io.Closer
	remain  int64 // bytes left in the current chunk
	started bool
	done    bool
	got     int64
	want    int64
}

var errBadChunk = errors.New("malformed aws-chunked body")

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.remain == 0 {
		if c.started {
			if err := c.expectCRLF(); err != nil {
				return 0, err
			}
		}
		c.started = true
		line, err := c.src.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("%w: chunk header: %v", errBadChunk, err)
		}
		head := strings.TrimRight(line, "\r\n")
		if i := strings.IndexByte(head, ';'); i >= 0 {
			head = head[:i]
		}
		size, err := strconv.ParseInt(strings.TrimSpace(head), 16, 64)
		if err != nil || size < 0 {
			return 0, fmt.Errorf("%w: chunk size %q", errBadChunk, head)
		}
		if size == 0 {
			c.done = true
			// Trailers (x-amz-checksum-*) and the closing empty line.
			_, _ = io.Copy(io.Discard, c.src)
			if c.got != c.want {
				return 0, fmt.Errorf("%w: %d bytes, x-amz-decoded-content-length says %d", errBadChunk, c.got, c.want)
			}
			return 0, io.EOF
		}
		c.remain = size
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.src.Read(p)
	c.remain -= int64(n)
	c.got += int64(n)
	if err == io.EOF && c.remain > 0 {
		err = io.ErrUnexpectedEOF
	} else if err == io.EOF {
		err = nil
	}
	return n, err
}

func (c *chunkedBody) expectCRLF() error {
	var b [2]byte
	if _, err := io.ReadFull(c.src, b[:]); err != nil || b != [2]byte{'\r', '\n'} {
		return fmt.Errorf("%w: missing CRLF after a chunk", errBadChunk)
	}
	return nil
}

func (c *chunkedBody) Close() error { return c.closer.Close() }
