package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream, or brings an existing one to cfg when the
// server allows it. It is safe to call from every replica at every start.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	// Look first: processes without the right to create streams (workers)
	// only need them to exist.
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		s, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	if sameStream(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	s, err = js.UpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("update stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

func sameStream(have, want jetstream.StreamConfig) bool {
	if len(have.Subjects) != len(want.Subjects) {
		return false
	}
	for i := range have.Subjects {
		if have.Subjects[i] != want.Subjects[i] {
			return false
		}
	}
	return have.Retention == want.Retention &&
		have.Discard == want.Discard &&
		limit(have.MaxBytes) == limit(want.MaxBytes) &&
		limit(have.MaxMsgs) == limit(want.MaxMsgs) &&
		have.MaxAge == want.MaxAge &&
		have.DenyDelete == want.DenyDelete &&
		have.DenyPurge == want.DenyPurge &&
		have.AllowRollup == want.AllowRollup &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		(want.Replicas == 0 || have.Replicas == want.Replicas)
}

// EnsureKV creates a key-value bucket or returns the existing one.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf("create kv %s: %w", cfg.Bucket, err)
	}
	kv, err = js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// limit treats 0 and -1 alike: both mean unlimited.
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Missing names the first stream or bucket of the topology that does not
// exist yet; "" when all do. It only looks, so a process without the right
// to create streams (a protocol worker) can wait for the control plane.
func Missing(ctx context.Context, js jetstream.JetStream) (string, error) {
	for _, cfg := range (Topology{}).streams() {
		if _, err := js.Stream(ctx, cfg.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
			return "stream " + cfg.Name, nil
		} else if err != nil {
			return "", fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	for _, b := range buckets {
		if _, err := js.KeyValue(ctx, b); errors.Is(err, jetstream.ErrBucketNotFound) {
			return "bucket " + b, nil
		} else if err != nil {
			return "", fmt.Errorf("bucket %s: %w", b, err)
		}
	}
	return "", nil
}
