package main

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
)

// Store is a gofakes3.Backend that keeps every object in a file of its own under a root folder:
//
//	<root>/buckets/<bucket>/objects/<sha256 of key>.json   the object's record (key, size, md5, headers, data file)
//	<root>/buckets/<bucket>/data/<sha256 of key>-<nonce>   the object's bytes
//	<root>/tmp/                                             writes in progress (emptied at start)
//
// A write goes to tmp/, is synced, and is renamed into data/ under a fresh name; the record is then
// written the same way and renamed over the old one. That rename is the commit: a crash at any
// point leaves either the old object or the new one, never a partial object, and the data files no
// record names are removed at the next start. Keys are hashed for file names, so any S3 key (one
// that is also a "folder" of other keys, "..", very long) maps to a safe path.
//
// An index of every record is kept in memory (read at start): listing sorts the keys of one bucket.
type Store struct {
	root string
	mu   sync.RWMutex
	// bucket name -> key -> record
	buckets map[string]*bucketIndex
}

type bucketIndex struct {
	created time.Time
	objects map[string]*record
}

type record struct {
	Key      string            `json:"key"`
	Data     string            `json:"data"`
	Size     int64             `json:"size"`
	MD5      string            `json:"md5"`
	Modified time.Time         `json:"modified"`
	Meta     map[string]string `json:"meta"`
}

var _ gofakes3.Backend = (*Store)(nil)

// OpenStore reads (or creates) a store in root.
func OpenStore(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: abs, buckets: map[string]*bucketIndex{}}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, err
	}
	for _, dir := range []string{s.tmpDir(), filepath.Join(abs, "buckets")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(filepath.Join(abs, "buckets"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || gofakes3.ValidateBucketName(e.Name()) != nil {
			continue
		}
		idx, err := s.loadBucket(e.Name())
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", e.Name(), err)
		}
		s.buckets[e.Name()] = idx
	}
	return s, nil
}

func (s *Store) Root() string                   { return s.root }
func (s *Store) tmpDir() string                 { return filepath.Join(s.root, "tmp") }
func (s *Store) bucketDir(bucket string) string { return filepath.Join(s.root, "buckets", bucket) }
func (s *Store) objectsDir(bucket string) string {
	return filepath.Join(s.bucketDir(bucket), "objects")
}
func (s *Store) dataDir(bucket string) string        { return filepath.Join(s.bucketDir(bucket), "data") }
func (s *Store) dataPath(bucket, name string) string { return filepath.Join(s.dataDir(bucket), name) }

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func (s *Store) recordPath(bucket, key string) string {
	return filepath.Join(s.objectsDir(bucket), keyHash(key)+".json")
}

// loadBucket reads a bucket's records and removes data files no record names (a write that
// crashed before its commit, or an old version whose removal was cut short).
func (s *Store) loadBucket(bucket string) (*bucketIndex, error) {
	info, err := os.Stat(s.bucketDir(bucket))
	if err != nil {
		return nil, err
	}
	idx := &bucketIndex{created: info.ModTime(), objects: map[string]*record{}}
	for _, dir := range []string{s.objectsDir(bucket), s.dataDir(bucket)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	recs, err := os.ReadDir(s.objectsDir(bucket))
	if err != nil {
		return nil, err
	}
	named := map[string]bool{}
	for _, e := range recs {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(s.objectsDir(bucket), e.Name()))
		if err != nil {
			return nil, err
		}
		var rec record
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("record %s: %w", e.Name(), err)
		}
		if keyHash(rec.Key)+".json" != e.Name() || filepath.Base(rec.Data) != rec.Data {
			return nil, fmt.Errorf("record %s does not belong to key %q", e.Name(), rec.Key)
		}
		idx.objects[rec.Key] = &rec
		named[rec.Data] = true
	}
	data, err := os.ReadDir(s.dataDir(bucket))
	if err != nil {
		return nil, err
	}
	for _, e := range data {
		if !named[e.Name()] {
			_ = os.Remove(s.dataPath(bucket, e.Name()))
		}
	}
	return idx, nil
}

func nonce() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// writeSynced writes r to a new file in tmp/ and syncs it; returns its path, size and md5.
func (s *Store) writeSynced(r io.Reader) (string, int64, []byte, error) {
	f, err := os.CreateTemp(s.tmpDir(), "put-")
	if err != nil {
		return "", 0, nil, err
	}
	hash := md5.New()
	n, err := io.Copy(io.MultiWriter(f, hash), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", 0, nil, err
	}
	return f.Name(), n, hash.Sum(nil), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// commit writes rec as the key's record (atomically: temp file, sync, rename).
func (s *Store) commit(bucket string, rec *record) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp, _, _, err := s.writeSynced(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, s.recordPath(bucket, rec.Key)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(s.objectsDir(bucket))
}

func (s *Store) ListBuckets() ([]gofakes3.BucketInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]gofakes3.BucketInfo, 0, len(s.buckets))
	for name, idx := range s.buckets {
		out = append(out, gofakes3.BucketInfo{Name: name, CreationDate: gofakes3.NewContentTime(idx.created)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Store) ListBucket(bucket string, prefix *gofakes3.Prefix, page gofakes3.ListBucketPage) (*gofakes3.ObjectList, error) {
	if prefix == nil {
		prefix = &gofakes3.Prefix{}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	idx := s.buckets[bucket]
	if idx == nil {
		return nil, gofakes3.BucketNotFound(bucket)
	}
	keys := make([]string, 0, len(idx.objects))
	for k := range idx.objects {
		if page.Marker == "" || k > page.Marker {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)

	out := gofakes3.NewObjectList()
	var match gofakes3.PrefixMatch
	lastCommon := ""
	var count int64
	for i, key := range keys {
		if !prefix.Match(key, &match) {
			continue
		}
		if match.CommonPrefix {
			if match.MatchedPart == lastCommon {
				continue // one entry per common prefix, counted once
			}
			out.AddPrefix(match.MatchedPart)
			lastCommon = match.MatchedPart
		} else {
			rec := idx.objects[key]
			out.Add(&gofakes3.Content{
				Key:          key,
				LastModified: gofakes3.NewContentTime(rec.Modified),
				ETag:         `"` + rec.MD5 + `"`,
				Size:         rec.Size,
			})
		}
		count++
		if page.MaxKeys > 0 && count >= page.MaxKeys {
			out.NextMarker = key
			out.IsTruncated = i < len(keys)-1
			break
		}
	}
	return out, nil
}

func (s *Store) CreateBucket(name string) error {
	if err := gofakes3.ValidateBucketName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buckets[name] != nil {
		return gofakes3.ResourceError(gofakes3.ErrBucketAlreadyExists, name)
	}
	for _, dir := range []string{s.objectsDir(name), s.dataDir(name)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := syncDir(filepath.Join(s.root, "buckets")); err != nil {
		return err
	}
	s.buckets[name] = &bucketIndex{created: time.Now(), objects: map[string]*record{}}
	return nil
}

func (s *Store) BucketExists(name string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.buckets[name] != nil, nil
}

func (s *Store) DeleteBucket(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.buckets[name]
	if idx == nil {
		return gofakes3.BucketNotFound(name)
	}
	if len(idx.objects) > 0 {
		return gofakes3.ResourceError(gofakes3.ErrBucketNotEmpty, name)
	}
	delete(s.buckets, name)
	return os.RemoveAll(s.bucketDir(name))
}

func (s *Store) ForceDeleteBucket(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buckets[name] == nil {
		return gofakes3.BucketNotFound(name)
	}
	delete(s.buckets, name)
	return os.RemoveAll(s.bucketDir(name))
}

// find returns the key's record, or the S3 error for a missing bucket or key. Caller holds mu.
func (s *Store) find(bucket, key string) (*record, error) {
	idx := s.buckets[bucket]
	if idx == nil {
		return nil, gofakes3.BucketNotFound(bucket)
	}
	rec := idx.objects[key]
	if rec == nil {
		return nil, gofakes3.KeyNotFound(key)
	}
	return rec, nil
}

func object(rec *record, contents io.ReadCloser, rng *gofakes3.ObjectRange) *gofakes3.Object {
	hash, _ := hex.DecodeString(rec.MD5)
	meta := make(map[string]string, len(rec.Meta))
	for k, v := range rec.Meta {
		meta[k] = v
	}
	return &gofakes3.Object{Name: rec.Key, Metadata: meta, Size: rec.Size, Contents: contents, Hash: hash, Range: rng}
}

func (s *Store) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, err := s.find(bucket, key)
	if err != nil {
		return nil, err
	}
	return object(rec, io.NopCloser(bytes.NewReader(nil)), nil), nil
}

type limitedFile struct {
	io.Reader
	f *os.File
}

func (l limitedFile) Close() error { return l.f.Close() }

func (s *Store) GetObject(bucket, key string, rangeRequest *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	s.mu.RLock()
	rec, err := s.find(bucket, key)
	var f *os.File
	if err == nil {
		// Opened under the lock: a later overwrite renames a new file in and unlinks this one,
		// which stays readable through the open handle.
		f, err = os.Open(s.dataPath(bucket, rec.Data))
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	rng, err := rangeRequest.Range(rec.Size)
	if err != nil {
		f.Close()
		return nil, err
	}
	var contents io.ReadCloser = f
	if rng != nil {
		if _, err := f.Seek(rng.Start, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
		contents = limitedFile{Reader: io.LimitReader(f, rng.Length), f: f}
	}
	return object(rec, contents, rng), nil
}

func (s *Store) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, conditions *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	var result gofakes3.PutObjectResult
	if ok, _ := s.BucketExists(bucket); !ok {
		return result, gofakes3.BucketNotFound(bucket)
	}
	// The bytes are written and synced outside the lock (a checkpoint takes a while).
	tmp, n, sum, err := s.writeSynced(input)
	if err != nil {
		return result, err
	}
	defer os.Remove(tmp) // a no-op once renamed
	if n != size {
		return result, gofakes3.ErrIncompleteBody
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.buckets[bucket]
	if idx == nil {
		return result, gofakes3.BucketNotFound(bucket)
	}
	old := idx.objects[key]
	if conditions != nil {
		info := &gofakes3.ConditionalObjectInfo{Exists: old != nil}
		if old != nil {
			info.Hash, _ = hex.DecodeString(old.MD5)
		}
		if err := gofakes3.CheckPutConditions(conditions, info); err != nil {
			return result, err
		}
	}
	rec := &record{Key: key, Data: keyHash(key) + "-" + nonce(), Size: n, MD5: hex.EncodeToString(sum), Modified: time.Now().UTC(), Meta: meta}
	if err := os.Rename(tmp, s.dataPath(bucket, rec.Data)); err != nil {
		return result, err
	}
	if err := s.commit(bucket, rec); err != nil {
		_ = os.Remove(s.dataPath(bucket, rec.Data))
		return result, err
	}
	idx.objects[key] = rec
	if old != nil {
		_ = os.Remove(s.dataPath(bucket, old.Data))
	}
	return result, nil
}

// deleteLocked removes a key (no error when it does not exist, as in S3). Caller holds mu.
func (s *Store) deleteLocked(bucket, key string) error {
	idx := s.buckets[bucket]
	if idx == nil {
		return gofakes3.BucketNotFound(bucket)
	}
	rec := idx.objects[key]
	if rec == nil {
		return nil
	}
	if err := os.Remove(s.recordPath(bucket, key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	delete(idx.objects, key)
	_ = os.Remove(s.dataPath(bucket, rec.Data))
	return nil
}

func (s *Store) DeleteObject(bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return gofakes3.ObjectDeleteResult{}, s.deleteLocked(bucket, key)
}

func (s *Store) DeleteMulti(bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var result gofakes3.MultiDeleteResult
	if s.buckets[bucket] == nil {
		return result, gofakes3.BucketNotFound(bucket)
	}
	for _, key := range keys {
		if err := s.deleteLocked(bucket, key); err != nil {
			result.Error = append(result.Error, gofakes3.ErrorResult{Code: gofakes3.ErrInternal, Message: err.Error(), Key: key})
		} else {
			result.Deleted = append(result.Deleted, gofakes3.ObjectID{Key: key})
		}
	}
	return result, nil
}

func (s *Store) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	return gofakes3.CopyObject(s, srcBucket, srcKey, dstBucket, dstKey, meta)
}
